"""Directories (fs/ext4/dir.c): reading directory blocks and readdir.

Directory blocks hold variable-length ``ext4_dir_entry_2`` records chained
by ``rec_len``; with metadata_csum each leaf block ends in a 12-byte tail
holding its checksum. Indexed (htree) directories keep their index in
blocks that look empty to a linear reader: the root (block 0, after "." and
"..") and interior nodes (one empty entry spanning the block).

Readdir cookies (``d_off``), chosen to stay valid while the directory changes:

* hashed directories (dir_index and either indexed or a single block, as
  Linux's ``is_dx_dir``): Linux's hash positions, ``(major >> 1) << 32 |
  minor``; entries are returned in hash order; "." is 0 and ".." ``1 << 32``;
  entries whose positions collide take the next free value, so positions
  strictly increase and resuming never loses an entry; the end is
  ``2**63 - 1``. Inserting or deleting entries, or an htree split, moves
  no other entry's position.
* linear directories: the byte offset of the entry in the directory; a
  cookie resumes at the first entry at or after it (as Linux's
  ``ext4_readdir`` resynchronises after a change); the end is ``i_size``.
* inline directories: "." is 0, ".." 2, others their offset inside the
  inode (``i_block`` area from 4, then the ``system.data`` area from 60).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING

from ...errors import EFSBADCRC, corrupted
from ...uapi import DT_BLK, DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_REG, DT_SOCK, DT_UNKNOWN
from .csum import block_csum
from .hash import EXT4_HTREE_EOF_64BIT, dx_hash_many, hash2pos
from .inline import inline_parts
from .ondisk import (
    DX_ROOT_INFO_OFFSET,
    EXT4_DIR_ENTRY_TAIL_FT,
    EXT4_INDEX_FL,
    EXT4_INLINE_DOTDOT_SIZE,
    EXT4_MIN_INLINE_DATA_SIZE,
)

if TYPE_CHECKING:
    from ...block.buffer import Buffer
    from .inode import Ext4Inode

_DE = struct.Struct("<IHBB")
_TAIL = struct.Struct("<IHBBI")
_U32 = struct.Struct("<I")
FT_TO_DT = (DT_UNKNOWN, DT_REG, DT_DIR, DT_CHR, DT_BLK, DT_FIFO, DT_SOCK, DT_LNK)
_LEAF_OK = 3  # Buffer.private: directory leaf checksum verified
DOTDOT_POS = 1 << 32
INLINE_DOTDOT_POS = 2

# a parsed entry: (offset in block, inode, name, file type)
Dirent = tuple[int, int, bytes, int]


def ft_to_dt(ft: int) -> int:
    return FT_TO_DT[ft] if ft < 8 else DT_UNKNOWN


def parse_entries(inode: Ext4Inode, data: bytes, start: int, limit: int, where: str) -> list[Dirent]:
    """Live entries of one directory block (or inline area) between ``start`` and ``limit``.

    EUCLEAN (naming ``where``) for a malformed chain or an inode number out of range.
    """
    sb = inode.sb
    big = sb.blocksize == 65536
    filetype = sb.filetype
    max_ino = sb.inodes_count
    out: list[Dirent] = []
    off = start
    unpack = _DE.unpack_from
    while off < limit:
        if off + 8 > limit:
            raise corrupted(where, f"directory entry at {off} overruns the block")
        ino, rec_len, name_len, ft = unpack(data, off)
        if big:
            # ext4_rec_len_from_disk: 65535 and 0 stand for 65536
            rec_len = 65536 if rec_len in (65535, 0) else (rec_len & 65532) | ((rec_len & 3) << 16)
        if not filetype:
            name_len |= ft << 8
            ft = 0
        if rec_len < 12 or rec_len & 3 or off + rec_len > limit or 8 + name_len > rec_len:
            raise corrupted(where, f"bad directory entry at {off}: rec_len {rec_len}, "
                            f"name_len {name_len}")
        if ino:
            if ino > max_ino:
                raise corrupted(where, f"directory entry at {off}: inode {ino} out of range")
            out.append((off, ino, data[off + 8:off + 8 + name_len], ft))
        off += rec_len
    return out


def leaf_limit(inode: Ext4Inode, buf: Buffer, pblk: int) -> int:
    """Where a leaf block's entries end; with metadata_csum, checks its tail and checksum.

    EBADMSG on a checksum mismatch, EUCLEAN when the tail is missing.
    """
    sb = inode.sb
    bs = sb.blocksize
    if not sb.metadata_csum:
        return bs
    limit = bs - 12
    if buf.private == _LEAF_OK:
        return limit
    data = buf.data
    zero1, rec_len, zero2, ft, csum = _TAIL.unpack_from(data, limit)
    where = f"ext4 directory inode {inode.ino} block {pblk}"
    if zero1 or rec_len != 12 or zero2 or ft != EXT4_DIR_ENTRY_TAIL_FT:
        raise corrupted(where, "no checksum tail in directory block", EFSBADCRC)
    if csum != block_csum(inode.csum_seed, memoryview(data)[:limit]):
        raise corrupted(where, "directory block checksum mismatch", EFSBADCRC)
    buf.private = _LEAF_OK
    return limit


def is_dx_node(data: bytes | bytearray, bs: int) -> bool:
    """An htree interior node: one empty entry spanning the whole block."""
    ino, rec_len, name_len, _ft = _DE.unpack_from(data, 0)
    if bs == 65536 and rec_len in (65535, 0):
        rec_len = 65536
    return ino == 0 and rec_len == bs and name_len == 0


def is_hashed(inode: Ext4Inode) -> bool:
    """Linux's is_dx_dir: readdir in hash order with hash cookies."""
    sb = inode.sb
    if not sb.dir_index or inode.inline:
        return False
    return bool(inode.i_flags & EXT4_INDEX_FL) or inode.size // sb.blocksize == 1


def dir_blocks(inode: Ext4Inode) -> Iterator[tuple[int, int, Buffer]]:
    """(logical block, physical block, buffer) of every mapped block, read in batches."""
    sb = inode.sb
    bs = sb.blocksize
    nblocks = inode.size // bs
    for s, n, p, unwritten in inode.runs():
        if s >= nblocks:
            break
        if unwritten:
            continue
        n = min(n, nblocks - s)
        for k in range(0, n, 256):
            m = min(256, n - k)
            bufs = sb.bcache.bread_many(sb.io, p + k, m, bs)
            for j, buf in enumerate(bufs):
                yield s + k + j, p + k + j, buf


def block_entries(inode: Ext4Inode, lblk: int, pblk: int, buf: Buffer) -> list[Dirent]:
    """The entries of one directory block; index blocks of an htree yield none but . and .."""
    sb = inode.sb
    bs = sb.blocksize
    where = f"ext4 directory inode {inode.ino} block {pblk}"
    indexed = inode.i_flags & EXT4_INDEX_FL
    if indexed and lblk == 0:
        # the htree root: "." and ".." only (the index code checks the rest)
        return _root_dots(inode, buf.data, where)
    if indexed and is_dx_node(buf.data, bs):
        return []
    limit = leaf_limit(inode, buf, pblk)
    return parse_entries(inode, bytes(buf.data), 0, limit, where)


def _root_dots(inode: Ext4Inode, data: bytes | bytearray, where: str) -> list[Dirent]:
    """The "." and ".." entries heading an htree root block."""
    ino0, rl0, nl0, ft0 = _DE.unpack_from(data, 0)
    ino1, _rl1, nl1, ft1 = _DE.unpack_from(data, 12)
    if rl0 != 12 or nl0 != 1 or data[8:9] != b"." or nl1 != 2 or data[20:22] != b"..":
        raise corrupted(where, "htree root does not start with . and ..")
    if ino1 > inode.sb.inodes_count:
        raise corrupted(where, f"'..' points to inode {ino1}, out of range")
    return [(0, ino0, b".", ft0), (12, ino1, b"..", ft1)]


class DirCache:
    """A directory's entries in readdir order with their cookies, and a name index.

    Entries the write side adds wait in arrival order (the name index has them at once)
    until the readdir order is wanted: then they are merged in one sort, not inserted into
    the sorted lists one by one (which costs a copy of the lists per entry). An entry of a
    hashed directory without an index may wait for its cookie too (``insert_later``): it
    is a hash of the name, and only readdir needs it, so a directory filled and never
    listed never hashes its names.
    """

    __slots__ = ("_positions", "_entries", "eof", "_names", "_pos", "_later", "_cookie")

    def __init__(self, positions: list[int], entries: list[tuple[bytes, int, int]], eof: int) -> None:
        self._positions = positions
        self._entries = entries  # (name, inode, d_type)
        self.eof = eof
        self._names: dict[bytes, int] | None = None
        self._pos: dict[bytes, int] | None = None  # name -> cookie, for the write side
        # added, not yet in the sorted lists: (name, inode, d_type, cookie or None for one
        # not yet computed, whether equal cookies move up)
        self._later: list[tuple[bytes, int, int, int | None, bool]] = []
        self._cookie: Callable[[bytes], int] | None = None

    @property
    def positions(self) -> list[int]:
        self._settle()
        return self._positions

    @property
    def entries(self) -> list[tuple[bytes, int, int]]:
        self._settle()
        return self._entries

    def _settle(self) -> None:
        """Merge the waiting entries into the sorted lists, as inserting them one by one in
        the order they came would (cookies computed now for those still without)."""
        if not self._later:
            return
        later, self._later = self._later, []
        items = []
        for name, ino, dt, pos, hashed in later:
            if pos is None:
                assert self._cookie is not None
                pos = self._cookie(name)
            items.append((pos, hashed, (name, ino, dt)))
        positions = self._positions
        new_pos = {p for p, _h, _e in items}
        if len(items) < 16 or len(new_pos) < len(items) or not new_pos.isdisjoint(positions):
            # few, or equal cookies (a hashed directory moves them up in arrival order)
            for pos, hashed, (name, ino, dt) in items:
                self._insert(name, ino, dt, pos, hashed)
            return
        merged = sorted([*zip(positions, self._entries), *((p, e) for p, _h, e in items)],
                        key=itemgetter(0))
        self._positions = [p for p, _e in merged]
        self._entries = [e for _p, e in merged]
        if self._pos is not None:
            self._pos.update((e[0], p) for p, _h, e in items)

    def index_of(self, name: bytes) -> int | None:
        """Where ``name`` is in ``entries`` (None if absent)."""
        self._settle()
        pos = self._pos
        if pos is None:
            pos = self._pos = {e[0]: p for e, p in zip(self._entries, self._positions, strict=True)}
        p = pos.get(name)
        if p is None:
            return None
        return bisect.bisect_left(self._positions, p)

    def lookup(self, name: bytes) -> int | None:
        names = self._names
        if names is None:
            self._settle()
            names = self._names = {e[0]: e[1] for e in self._entries}
        return names.get(name)

    # -- kept current by the write side (dirwrite) -----------------------------------------
    def insert(self, name: bytes, ino: int, dt: int, pos: int, hashed: bool) -> None:
        """Add an entry at cookie ``pos``; a hashed directory's equal positions move up
        to the next free one, so cookies stay strictly increasing."""
        self._later.append((name, ino, dt, pos, hashed))
        if self._names is not None:
            self._names[name] = ino

    def insert_later(self, name: bytes, ino: int, dt: int, cookie: Callable[[bytes], int]) -> None:
        """Add an entry of a hashed directory whose cookie ``cookie(name)`` gives, when
        readdir (or a change elsewhere) needs it."""
        self._cookie = cookie
        self._later.append((name, ino, dt, None, True))
        if self._names is not None:
            self._names[name] = ino

    def _insert(self, name: bytes, ino: int, dt: int, pos: int, hashed: bool) -> None:
        positions = self._positions
        i = bisect.bisect_left(positions, pos)
        if hashed:
            while i < len(positions) and positions[i] == pos:
                pos += 1
                i += 1
        positions.insert(i, pos)
        self._entries.insert(i, (name, ino, dt))
        if self._names is not None:
            self._names[name] = ino
        if self._pos is not None:
            self._pos[name] = pos

    def remove(self, name: bytes) -> None:
        i = self.index_of(name)
        if i is None:
            return
        del self._entries[i]
        del self._positions[i]
        if self._names is not None:
            self._names.pop(name, None)
        if self._pos is not None:
            self._pos.pop(name, None)

    def retarget(self, name: bytes, ino: int, dt: int) -> None:
        i = self.index_of(name)
        if i is None:
            return
        self._entries[i] = (name, ino, dt)
        if self._names is not None:
            self._names[name] = ino


def _inline_cache(inode: Ext4Inode) -> DirCache:
    head, extra = inline_parts(inode)
    where = f"ext4 inline directory inode {inode.ino}"
    parent = _U32.unpack_from(head, 0)[0]
    positions = [0, INLINE_DOTDOT_POS]
    entries = [(b".", inode.ino, DT_DIR), (b"..", parent, DT_DIR)]
    for off, ino, name, ft in parse_entries(inode, head, EXT4_INLINE_DOTDOT_SIZE,
                                            EXT4_MIN_INLINE_DATA_SIZE, where):
        positions.append(off)
        entries.append((name, ino, ft_to_dt(ft)))
    if extra:
        for off, ino, name, ft in parse_entries(inode, extra, 0, len(extra), where):
            positions.append(EXT4_MIN_INLINE_DATA_SIZE + off)
            entries.append((name, ino, ft_to_dt(ft)))
    return DirCache(positions, entries, EXT4_MIN_INLINE_DATA_SIZE + len(extra))


def _linear_cache(inode: Ext4Inode) -> DirCache:
    bs = inode.sb.blocksize
    positions: list[int] = []
    entries: list[tuple[bytes, int, int]] = []
    for lblk, pblk, buf in dir_blocks(inode):
        base = lblk * bs
        for off, ino, name, ft in block_entries(inode, lblk, pblk, buf):
            positions.append(base + off)
            entries.append((name, ino, ft_to_dt(ft)))
    return DirCache(positions, entries, inode.size)


def hash_version(inode: Ext4Inode) -> int:
    """The hash a hashed directory uses: its root's, else the default; unsigned per s_flags."""
    sb = inode.sb
    version = sb.def_hash_version
    if inode.i_flags & EXT4_INDEX_FL:
        pblk = inode.bmap(0)
        if pblk:
            version = sb.bread(pblk).data[DX_ROOT_INFO_OFFSET + 4]
    if version <= 2 and sb.unsigned_hash:
        version += 3
    return version


def _hashed_cache(inode: Ext4Inode) -> DirCache:
    sb = inode.sb
    version = hash_version(inode)
    seed = sb.hash_seed
    dot, dotdot = inode.ino, 0
    found: list[tuple[bytes, int, int]] = []
    for lblk, pblk, buf in dir_blocks(inode):
        for _off, ino, name, ft in block_entries(inode, lblk, pblk, buf):
            if name == b".":
                continue
            if name == b"..":
                dotdot = ino
                continue
            found.append((name, ino, ft))
    hashes = dx_hash_many([name for name, _ino, _ft in found], version, seed)
    items = [(hash2pos(major, minor), name, ino, ft_to_dt(ft))
             for (major, minor), (name, ino, ft) in zip(hashes, found)]
    items.sort()
    positions = [0, DOTDOT_POS]
    entries = [(b".", dot, DT_DIR), (b"..", dotdot or dot, DT_DIR)]
    prev = DOTDOT_POS
    for pos, name, ino, dt in items:
        if pos <= prev:
            pos = prev + 1  # equal hashes: keep positions strictly increasing
        positions.append(pos)
        entries.append((name, ino, dt))
        prev = pos
    return DirCache(positions, entries, EXT4_HTREE_EOF_64BIT)


def get_cache(inode: Ext4Inode) -> DirCache:
    """The directory's parsed entries (built once, kept while the inode is cached)."""
    dc = inode.dir_cache
    if dc is None:
        if inode.inline:
            dc = _inline_cache(inode)
        elif is_hashed(inode):
            dc = _hashed_cache(inode)
        else:
            dc = _linear_cache(inode)
        inode.dir_cache = dc
    return dc  # type: ignore[return-value]


def iterate(inode: Ext4Inode, pos: int) -> Iterator[tuple[bytes, int, int, int]]:
    """Entries at or after cookie ``pos``: (name, inode, d_type, cookie of the next)."""
    dc = get_cache(inode)
    positions, entries = dc.positions, dc.entries
    n = len(entries)
    i = bisect.bisect_left(positions, pos)
    while i < n:
        name, ino, dt = entries[i]
        i += 1
        yield name, ino, dt, positions[i] if i < n else dc.eof
