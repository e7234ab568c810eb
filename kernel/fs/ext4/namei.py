"""Name lookup (fs/ext4/namei.c, read side): htree index walks and linear scans.

An indexed directory's root block holds, after "." and "..", a
``dx_root_info`` (hash version, depth) and sorted ``dx_entry`` (hash,
block) pairs; interior nodes hold more pairs; the leaves are ordinary
directory blocks. A lookup hashes the name, binary-searches each level and
scans one leaf, moving to the next leaf only while the index marks a hash
collision continuing there (low bit of the next entry's hash). Every index
node's count, limit and checksum are checked. An index Linux would call
ERR_BAD_DX_DIR (unknown hash, unsupported depth) falls back to a linear scan.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from ...errors import EFSBADCRC, corrupted
from ...vfs.inode import table_now
from .csum import dx_csum
from .dir import block_entries, dir_blocks, get_cache, is_dx_node, is_hashed, leaf_limit, parse_entries
from .hash import dx_hash
from .ondisk import (
    DX_NODE_ENTRIES_OFFSET,
    DX_ROOT_ENTRIES_OFFSET,
    DX_ROOT_INFO_OFFSET,
    EXT4_HTREE_LEVEL,
    EXT4_HTREE_LEVEL_COMPAT,
    EXT4_INDEX_FL,
)

if TYPE_CHECKING:
    from .inode import Ext4Inode

log = logging.getLogger(__name__)

_INFO = struct.Struct("<IBBBB")
_CL = struct.Struct("<HH")
_U32 = struct.Struct("<I")
EXT4_DX_BLOCK_MASK = 0x0FFFFFFF
_SMALL_DIR_BLOCKS = 2  # scan these directly rather than building a name index


class BadDx(Exception):
    """The index cannot be used (Linux's ERR_BAD_DX_DIR): search linearly."""


def lookup(inode: Ext4Inode, name: bytes) -> int | None:
    """The inode number ``name`` links to in directory ``inode``, or None.

    EUCLEAN/EBADMSG for damaged directory blocks or index nodes.
    """
    dc = inode.dir_cache
    if dc is not None:
        return dc.lookup(name)  # type: ignore[attr-defined]
    sb = inode.sb
    if not sb.rdonly:
        # a directory being changed keeps its parsed entries up to date (dirwrite): parse
        # it once, then every lookup is a dictionary probe
        return get_cache(inode).lookup(name)
    if inode.inline:
        return get_cache(inode).lookup(name)
    names = inode.dir_names
    if names is not None:
        return names.get(name)
    inode.lookups += 1
    if table_now(inode.lookups, inode.size):
        try:
            names = inode.dir_names = _name_table(inode)
            return names.get(name)
        except OSError as e:  # a damaged block: search by name, as before
            log.warning("ext4 directory inode %d: %s; looking names up one by one",
                        inode.ino, e)
    if inode.i_flags & EXT4_INDEX_FL and sb.dir_index:
        try:
            return dx_find(inode, name)
        except BadDx as e:
            log.warning("ext4 directory inode %d: %s; searching it linearly", inode.ino, e)
            return get_cache(inode).lookup(name)
    if inode.size // sb.blocksize <= _SMALL_DIR_BLOCKS or is_hashed(inode):
        for lblk, pblk, buf in dir_blocks(inode):
            for _off, ino, n, _ft in block_entries(inode, lblk, pblk, buf):
                if n == name:
                    return ino
        return None
    return get_cache(inode).lookup(name)


def _name_table(inode: Ext4Inode) -> dict[bytes, int]:
    """name -> inode number of every entry: the blocks parsed once, in disk order (no
    hashing; readdir's order is not needed to look names up)."""
    names: dict[bytes, int] = {}
    for lblk, pblk, buf in dir_blocks(inode):
        for _off, ino, n, _ft in block_entries(inode, lblk, pblk, buf):
            names[n] = ino
    return names


def _read_node(inode: Ext4Inode, lblk: int) -> tuple[int, bytearray]:
    sb = inode.sb
    if lblk >= inode.size // sb.blocksize:
        raise corrupted(f"ext4 directory inode {inode.ino} htree",
                        f"index points to block {lblk} beyond the directory")
    pblk = inode.bmap(lblk)
    if not pblk:
        raise corrupted(f"ext4 directory inode {inode.ino} htree", f"hole at block {lblk}")
    return pblk, sb.bread(pblk).data


def _entries(inode: Ext4Inode, data: bytearray, pblk: int, off: int,
             expect_limit: int) -> list[tuple[int, int]]:
    """The (hash, block) pairs of an index node whose count/limit is at ``off``."""
    where = f"ext4 directory inode {inode.ino} htree block {pblk}"
    limit, count = _CL.unpack_from(data, off)
    if limit != expect_limit:
        raise BadDx(f"{where}: dx limit {limit}, expected {expect_limit}")
    if count == 0 or count > limit:
        raise corrupted(where, f"dx count {count} (limit {limit})")
    sb = inode.sb
    if sb.metadata_csum:
        tail = off + limit * 8
        if _U32.unpack_from(data, tail + 4)[0] != dx_csum(inode.csum_seed, data, off, count, tail):
            raise corrupted(where, "htree node checksum mismatch", EFSBADCRC)
    vals = struct.unpack_from(f"<{2 * count}I", data, off)
    out = [(0, vals[1] & EXT4_DX_BLOCK_MASK)]
    prev = 0
    for i in range(2, 2 * count, 2):
        h = vals[i]
        if h < prev:
            raise corrupted(where, "dx entries out of order")
        prev = h
        out.append((h, vals[i + 1] & EXT4_DX_BLOCK_MASK))
    return out


def _search(entries: list[tuple[int, int]], h: int) -> int:
    """Index of the last entry whose hash is <= h (entry 0 covers everything below)."""
    lo, hi = 1, len(entries) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if entries[mid][0] > h:
            hi = mid - 1
        else:
            lo = mid + 1
    return lo - 1


def dx_find(inode: Ext4Inode, name: bytes) -> int | None:
    """Look ``name`` up through the htree index (dx_probe + htree_next_block)."""
    sb = inode.sb
    bs = sb.blocksize
    csum_slot = 1 if sb.metadata_csum else 0
    pblk, root = _read_node(inode, 0)
    reserved, version, info_len, levels, _flags = _INFO.unpack_from(root, DX_ROOT_INFO_OFFSET)
    if reserved or info_len != 8:
        raise BadDx("bad dx_root_info")
    if version > 2:
        raise BadDx(f"unrecognised hash version {version}")
    max_levels = EXT4_HTREE_LEVEL if sb.large_dir else EXT4_HTREE_LEVEL_COMPAT
    if levels >= max_levels:
        raise BadDx(f"unimplemented htree depth {levels + 1}")
    if version <= 2 and sb.unsigned_hash:
        version += 3
    major, _minor = dx_hash(name, version, sb.hash_seed)
    root_limit = (bs - DX_ROOT_ENTRIES_OFFSET) // 8 - csum_slot
    node_limit = (bs - DX_NODE_ENTRIES_OFFSET) // 8 - csum_slot
    entries = _entries(inode, root, pblk, DX_ROOT_ENTRIES_OFFSET, root_limit)
    path: list[tuple[list[tuple[int, int]], int]] = []
    for level in range(levels + 1):
        i = _search(entries, major)
        path.append((entries, i))
        if level < levels:
            entries = _node(inode, entries[i][1], node_limit)
    nblocks = inode.size // bs
    for _hop in range(nblocks):
        entries, i = path[-1]
        found = _scan_leaf(inode, entries[i][1], name)
        if found is not None:
            return found
        # htree_next_block: continue only while the next entry's hash is ours with the
        # collision bit set
        depth = len(path) - 1
        while depth >= 0 and path[depth][1] + 1 >= len(path[depth][0]):
            depth -= 1
        if depth < 0:
            return None
        ents, j = path[depth]
        j += 1
        nh = ents[j][0]
        if not nh & 1 or nh & ~1 != major:
            return None
        path[depth] = (ents, j)
        for d in range(depth + 1, len(path)):
            child = _node(inode, path[d - 1][0][path[d - 1][1]][1], node_limit)
            path[d] = (child, 0)
    raise corrupted(f"ext4 directory inode {inode.ino} htree", "collision chain does not end")


def _node(inode: Ext4Inode, lblk: int, node_limit: int) -> list[tuple[int, int]]:
    pblk, data = _read_node(inode, lblk)
    if not is_dx_node(data, inode.sb.blocksize):
        raise corrupted(f"ext4 directory inode {inode.ino} htree block {pblk}",
                        "not an index node")
    return _entries(inode, data, pblk, DX_NODE_ENTRIES_OFFSET, node_limit)


def _scan_leaf(inode: Ext4Inode, lblk: int, name: bytes) -> int | None:
    sb = inode.sb
    if lblk >= inode.size // sb.blocksize:
        raise corrupted(f"ext4 directory inode {inode.ino} htree",
                        f"leaf block {lblk} beyond the directory")
    pblk = inode.bmap(lblk)
    if not pblk:
        raise corrupted(f"ext4 directory inode {inode.ino} htree", f"hole at block {lblk}")
    buf = sb.bread(pblk)
    limit = leaf_limit(inode, buf, pblk)
    data = bytes(buf.data)
    # fast path: find the name's bytes, then confirm by parsing the block
    if data.find(name) < 0:
        return None
    for _off, ino, n, _ft in parse_entries(inode, data, 0, limit,
                                           f"ext4 directory inode {inode.ino} block {pblk}"):
        if n == name:
            return ino
    return None
