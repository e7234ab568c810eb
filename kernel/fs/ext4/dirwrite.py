"""Changing directories (fs/ext4/namei.c, write side): add, remove and retarget entries.

Linear directories take a new entry in the first block with room (a per-
directory table of each block's largest gap avoids rescanning), else in a
new block at the end. When a one-block directory overflows on a filesystem
with dir_index it becomes an htree (make_indexed_dir): the root keeps "."
and "..", the entries are split by hash over two leaves. An htree insert
goes to the leaf the index names; a full leaf is split at its median hash
(the collision bit marks a hash continuing in the next leaf), a full index
node is split, and a full root grows the tree one level (up to two levels,
three with largedir). Entries are removed in place: the gap joins the
previous entry, as Linux leaves it.

Each directory keeps a ``DirState`` (name -> logical block, largest gap per
block) built on first change, and its read-side ``DirCache`` is updated in
step, so readdir cookies of untouched entries never move.
"""

from __future__ import annotations

import bisect
import errno
import struct
from typing import TYPE_CHECKING

from ...errors import corrupted, kerr
from ...uapi import S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK
from .csum import block_csum, dx_csum
from .dir import (
    DirCache,
    block_entries,
    dir_blocks,
    ft_to_dt,
    get_cache,
    hash_version,
    is_dx_node,
    is_hashed,
)
from .hash import dx_hash, dx_hash_many, hash2pos
from .ondisk import (
    DX_NODE_ENTRIES_OFFSET,
    DX_ROOT_ENTRIES_OFFSET,
    DX_ROOT_INFO_OFFSET,
    EXT4_DIR_ENTRY_TAIL_FT,
    EXT4_HTREE_LEVEL,
    EXT4_HTREE_LEVEL_COMPAT,
    EXT4_INDEX_FL,
)

if TYPE_CHECKING:
    from .inode import Ext4Inode

_DE = struct.Struct("<IHBB")
_CL = struct.Struct("<HH")
_DXE = struct.Struct("<II")
_FT = {S_IFREG: 1, S_IFDIR: 2, S_IFCHR: 3, S_IFBLK: 4, S_IFIFO: 5, S_IFSOCK: 6, S_IFLNK: 7}
_LEAF_OK = 3  # dir.py's Buffer.private value for a verified leaf


def file_type(sb: object, mode: int) -> int:
    return _FT.get(mode & S_IFMT, 0) if sb.filetype else 0  # type: ignore[attr-defined]


def rec_len_needed(name_len: int) -> int:
    return (8 + name_len + 3) & ~3


def _rl_to_disk(n: int) -> int:
    return 65535 if n == 65536 else n


def _rl_from_disk(n: int, bs: int) -> int:
    if bs == 65536 and n in (65535, 0):
        return 65536
    return n


class DirState:
    """Where each name lives (logical block) and each block's largest gap.

    ``hints`` remembers, per leaf block this mount changed, the record the last insert
    made (offset, its slack) and the largest slack of every other record: the next insert
    that only that record can take goes there without walking the block. ``dx`` holds
    the parsed index nodes (by logical block) until the index next changes; ``hashes``
    the (major, minor) hash of each name this mount added to the htree (a leaf split
    needs every name's hash).
    """

    __slots__ = ("locs", "free", "hints", "dx", "hashes")

    def __init__(self, locs: dict[bytes, int], free: list[int]) -> None:
        self.locs = locs
        self.free = free
        self.hints: dict[int, tuple[int, int, int]] = {}
        self.dx: dict[int, tuple[list[int], list[tuple[int, int]]]] = {}
        self.hashes: dict[bytes, tuple[int, int]] = {}


# -- one block -----------------------------------------------------------------------------
def _limit(inode: Ext4Inode) -> int:
    return inode.sb.blocksize - (12 if inode.sb.metadata_csum else 0)


def _walk(data: bytearray, limit: int, bs: int, where: str) -> list[tuple[int, int, int, int]]:
    """Every record of a leaf block: (offset, inode, rec_len, name_len)."""
    out: list[tuple[int, int, int, int]] = []
    append, unpack = out.append, _DE.unpack_from  # a hot loop: every insert walks its block
    big = bs == 65536
    off = 0
    while off < limit:
        if off + 8 > limit:
            raise corrupted(where, f"directory entry at {off} overruns the block")
        ino, rl, nl, _ft = unpack(data, off)
        if big:
            rl = _rl_from_disk(rl, bs)
        if rl < 12 or rl & 3 or off + rl > limit or 8 + nl > rl:
            raise corrupted(where, f"bad directory entry at {off}")
        append((off, ino, rl, nl))
        off += rl
    return out


def _gap(recs: list[tuple[int, int, int, int]]) -> int:
    """The largest record a block can still take."""
    best = 0
    for _off, ino, rl, nl in recs:
        slack = rl - rec_len_needed(nl) if ino else rl
        best = max(best, slack)
    return best


def _finish_leaf(inode: Ext4Inode, buf: object) -> None:
    """Store a changed leaf block: its checksum tail, dirty."""
    sb = inode.sb
    data = buf.data  # type: ignore[attr-defined]
    if sb.metadata_csum:
        bs = sb.blocksize
        _DE.pack_into(data, bs - 12, 0, 12, 0, EXT4_DIR_ENTRY_TAIL_FT)
        struct.pack_into("<I", data, bs - 4, block_csum(inode.csum_seed, memoryview(data)[:bs - 12]))
    buf.private = _LEAF_OK  # type: ignore[attr-defined]
    sb.bcache.mark_dirty(buf)  # type: ignore[arg-type]


def _put_entry(data: bytearray, off: int, rl: int, ino: int, name: bytes, ft: int, bs: int) -> None:
    _DE.pack_into(data, off, ino, _rl_to_disk(rl), len(name), ft)
    data[off + 8:off + 8 + len(name)] = name


def _insert_in_block(inode: Ext4Inode, data: bytearray, name: bytes, ino: int, ft: int,
                     st: DirState, lblk: int) -> tuple[int, int] | None:
    """Put the entry in the first record with room; (its offset, the block's new largest
    gap) or None. The whole block is validated (``_walk``) before it first changes; after
    that the block's hint (see DirState) places an entry that only one record can take."""
    bs = inode.sb.blocksize
    need = (8 + len(name) + 3) & ~3
    hint = st.hints.get(lblk)
    if hint is not None:
        off, slack, other = hint
        if other < need <= slack:
            cur, rl, nl, _ft = _DE.unpack_from(data, off)
            if bs == 65536:
                rl = _rl_from_disk(rl, bs)
            used = (8 + nl + 3) & ~3
            if cur and rl - used == slack and off + rl <= _limit(inode):
                _DE.pack_into(data, off, cur, _rl_to_disk(used), nl, data[off + 7])
                _put_entry(data, off + used, rl - used, ino, name, ft, bs)
                left = rl - used - need
                st.hints[lblk] = (off + used, left, other)
                return off + used, max(other, left)
    fit: tuple[int, int, int, int] | None = None
    best = 0  # the largest gap of the records the entry does not go into
    where = f"ext4 directory inode {inode.ino} block {lblk}"
    for rec in _walk(data, _limit(inode), bs, where):
        _off, cur, rl, nl = rec
        slack = rl - rec_len_needed(nl) if cur else rl
        if fit is None and slack >= need:
            fit = rec
        elif slack > best:
            best = slack
    if fit is None:
        st.hints.pop(lblk, None)
        return None
    off, cur, rl, nl = fit
    used = rec_len_needed(nl) if cur else 0
    if cur:
        _DE.pack_into(data, off, cur, _rl_to_disk(used), nl, data[off + 7])
    _put_entry(data, off + used, rl - used, ino, name, ft, bs)
    left = rl - used - need
    st.hints[lblk] = (off + used, left, best)
    return off + used, max(best, left)


def _new_leaf(inode: Ext4Inode) -> bytearray:
    bs = inode.sb.blocksize
    data = bytearray(bs)
    _DE.pack_into(data, 0, 0, _rl_to_disk(_limit(inode)), 0, 0)
    return data


# -- state ----------------------------------------------------------------------------------------
def _state(inode: Ext4Inode) -> DirState:
    st = inode.dir_state
    if st is None:
        sb = inode.sb
        bs = sb.blocksize
        locs: dict[bytes, int] = {}
        free = [0] * (inode.size // bs)
        indexed = inode.i_flags & EXT4_INDEX_FL
        for lblk, pblk, buf in dir_blocks(inode):
            if indexed and (lblk == 0 or is_dx_node(buf.data, bs)):
                continue
            for _off, _ino, name, _ft in block_entries(inode, lblk, pblk, buf):
                locs[name] = lblk
            free[lblk] = _gap(_walk(buf.data, _limit(inode), bs,
                                    f"ext4 directory inode {inode.ino} block {pblk}"))
        st = inode.dir_state = DirState(locs, free)
    return st  # type: ignore[return-value]


def _block(inode: Ext4Inode, lblk: int) -> object:
    pblk = inode.bmap(lblk)
    if not pblk:
        raise corrupted(f"ext4 directory inode {inode.ino}", f"hole at block {lblk}")
    return inode.sb.bread(pblk)


def _append_block(inode: Ext4Inode) -> tuple[int, object]:
    """A new block at the end of the directory (ENOSPC, EFBIG at the size limits)."""
    from . import file as f

    sb = inode.sb
    bs = sb.blocksize
    lblk = inode.size // bs
    f.allocate(inode, lblk, lblk + 1, False)
    pblk = inode.bmap(lblk)
    if not pblk:
        raise kerr(errno.ENOSPC, "ext4", "no free blocks")
    buf = sb.bcache.getblk(sb.io, pblk, bs)
    inode.size += bs
    sb.dirty_inode(inode)
    dc = inode.dir_cache
    if isinstance(dc, DirCache) and not is_hashed(inode):
        dc.eof = inode.size  # a linear directory's last cookie is its size
    st = inode.dir_state
    if isinstance(st, DirState):
        st.free.append(0)
    return lblk, buf


def _hash_pos(inode: Ext4Inode, name: bytes) -> int:
    major, minor = dx_hash(name, hash_version(inode), inode.sb.hash_seed)
    return hash2pos(major, minor)


def _uninline(inode: Ext4Inode) -> None:
    if inode.inline:
        from .inline import uninline

        uninline(inode)


# -- adding ----------------------------------------------------------------------------------------
def add_entry(inode: Ext4Inode, name: bytes, ino: int, mode: int) -> None:
    """Link ``name`` -> ``ino`` into directory ``inode`` (ENOSPC when no block can be had)."""
    sb = inode.sb
    _uninline(inode)
    ft = file_type(sb, mode)
    hashed_before = is_hashed(inode)
    pos: int | None
    if inode.i_flags & EXT4_INDEX_FL and sb.dir_index:
        pos = _dx_add(inode, name, ino, ft)
    else:
        pos = _linear_add(inode, name, ino, ft)
    dc = inode.dir_cache
    if dc is not None:
        if is_hashed(inode) != hashed_before or pos is None:
            inode.dir_cache = None
        elif hashed_before and not inode.i_flags & EXT4_INDEX_FL:
            # one block read in hash order: the cookie is the name's hash, wanted only by
            # readdir
            dc.insert_later(name, ino, ft_to_dt(ft),  # type: ignore[attr-defined]
                            lambda n, d=inode: _hash_pos(d, n))
        else:
            dc.insert(name, ino, ft_to_dt(ft), pos, hashed_before)  # type: ignore[attr-defined]
    sb.dirty_inode(inode)


def _linear_add(inode: Ext4Inode, name: bytes, ino: int, ft: int) -> int | None:
    """Add to an unindexed directory; the entry's readdir position (block * size + offset),
    or None when the directory became indexed instead."""
    sb = inode.sb
    st = _state(inode)
    need = rec_len_needed(len(name))
    for lblk, gap in enumerate(st.free):
        if gap >= need:
            buf = _block(inode, lblk)
            res = _insert_in_block(inode, buf.data, name, ino, ft, st, lblk)  # type: ignore[attr-defined]
            if res is None:
                raise corrupted(f"ext4 directory inode {inode.ino}",
                                f"block {lblk} has no room it claimed")
            st.free[lblk] = res[1]
            st.locs[name] = lblk
            _finish_leaf(inode, buf)
            return lblk * sb.blocksize + res[0]
    nblocks = len(st.free)
    if nblocks == 1 and sb.dir_index and not inode.inline:
        _make_indexed(inode, name, ino, ft)
        return None
    lblk, buf = _append_block(inode)
    data = _new_leaf(inode)
    res = _insert_in_block(inode, data, name, ino, ft, st, lblk)
    assert res is not None
    buf.data[:] = data  # type: ignore[attr-defined]
    st.free[lblk] = res[1]
    st.locs[name] = lblk
    _finish_leaf(inode, buf)
    return lblk * sb.blocksize + res[0]


# -- htree -------------------------------------------------------------------------------------------
def _levels_max(inode: Ext4Inode) -> int:
    return EXT4_HTREE_LEVEL if inode.sb.large_dir else EXT4_HTREE_LEVEL_COMPAT


def _limits(inode: Ext4Inode) -> tuple[int, int]:
    bs = inode.sb.blocksize
    slot = 1 if inode.sb.metadata_csum else 0
    return (bs - DX_ROOT_ENTRIES_OFFSET) // 8 - slot, (bs - DX_NODE_ENTRIES_OFFSET) // 8 - slot


def _read_dx(data: bytearray, off: int) -> list[tuple[int, int]]:
    _limit_, count = _CL.unpack_from(data, off)
    vals = struct.unpack_from(f"<{2 * count}I", data, off)
    return [(0 if i == 0 else vals[2 * i], vals[2 * i + 1] & 0x0FFFFFFF) for i in range(count)]


def _write_dx(inode: Ext4Inode, buf: object, off: int, limit: int,
              entries: list[tuple[int, int]]) -> None:
    """Store an index node's entries with its count, limit and checksum tail."""
    data = buf.data  # type: ignore[attr-defined]
    if len(entries) > limit:
        raise AssertionError("dx node overflow")
    st = inode.dir_state
    if isinstance(st, DirState):
        st.dx.clear()
    _CL.pack_into(data, off, limit, len(entries))
    struct.pack_into("<I", data, off + 4, entries[0][1])
    for i in range(1, len(entries)):
        _DXE.pack_into(data, off + 8 * i, entries[i][0], entries[i][1])
    end = off + 8 * len(entries)
    tail = off + 8 * limit
    data[end:tail] = bytes(tail - end)
    if inode.sb.metadata_csum:
        struct.pack_into("<I", data, tail, 0)
        struct.pack_into("<I", data, tail + 4, dx_csum(inode.csum_seed, data, off, len(entries), tail))
    inode.sb.bcache.mark_dirty(buf)  # type: ignore[arg-type]


def _leaf_hashes(inode: Ext4Inode, data: bytearray) -> list[tuple[int, int, bytes, int, int]]:
    """Live entries of a leaf as (hash, minor, name, inode, file type), sorted by hash."""
    sb = inode.sb
    version = hash_version(inode)
    known = _state(inode).hashes
    live = [(bytes(data[off + 8:off + 8 + nl]), ino, data[off + 7])
            for off, ino, _rl, nl in _walk(data, _limit(inode), sb.blocksize,
                                           f"ext4 directory inode {inode.ino}") if ino]
    unknown = [name for name, _ino, _ft in live if name not in known]
    # names this mount did not add are hashed together
    other = dict(zip(unknown, dx_hash_many(unknown, version, sb.hash_seed))) if unknown else {}
    out = [(*(known.get(name) or other[name]), name, ino, ft) for name, ino, ft in live]
    out.sort()
    return out


def _fill_leaf(inode: Ext4Inode, items: list[tuple[int, int, bytes, int, int]]) -> bytearray:
    data = _new_leaf(inode)
    bs = inode.sb.blocksize
    limit = _limit(inode)
    off = 0
    for k, (_h, _m, name, ino, ft) in enumerate(items):
        rl = rec_len_needed(len(name)) if k + 1 < len(items) else limit - off
        _put_entry(data, off, rl, ino, name, ft, bs)
        off += rl
    return data


def _split_items(items: list[tuple[int, int, bytes, int, int]]) -> tuple[int, int]:
    """Where to split a full leaf's sorted entries: (index, hash of the new leaf's index entry)."""
    total = sum(rec_len_needed(len(t[2])) for t in items)
    acc = 0
    m = len(items) // 2
    for i, t in enumerate(items):
        acc += rec_len_needed(len(t[2]))
        if acc > total // 2:
            m = max(i, 1)
            break
    m = min(max(m, 1), len(items) - 1)
    h = items[m][0]
    return m, h | (1 if items[m - 1][0] == h else 0)


def _make_indexed(inode: Ext4Inode, name: bytes, ino: int, ft: int) -> None:
    """Turn a full one-block directory into an htree with two leaves, then add the entry."""
    sb = inode.sb
    bs = sb.blocksize
    st = _state(inode)
    buf0 = _block(inode, 0)
    data0 = buf0.data  # type: ignore[attr-defined]
    recs = _walk(data0, _limit(inode), bs, f"ext4 directory inode {inode.ino} block 0")
    if len(recs) < 2 or data0[8:9] != b"." or data0[recs[1][0] + 8:recs[1][0] + 10] != b"..":
        raise corrupted(f"ext4 directory inode {inode.ino}", "block 0 does not start with . and ..")
    dot, dotdot = recs[0][1], recs[1][1]
    items = [t for t in _leaf_hashes(inode, data0) if t[2] not in (b".", b"..")]
    l1, b1 = _append_block(inode)
    l2, b2 = _append_block(inode)
    m, h2 = _split_items(items) if len(items) > 1 else (len(items), 0xFFFFFFFE)
    b1.data[:] = _fill_leaf(inode, items[:m])  # type: ignore[attr-defined]
    b2.data[:] = _fill_leaf(inode, items[m:]) if items[m:] else _new_leaf(inode)  # type: ignore[attr-defined]
    _finish_leaf(inode, b1)
    _finish_leaf(inode, b2)
    # the root: ".", ".." spanning the block, dx_root_info, entries
    root = bytearray(bs)
    _DE.pack_into(root, 0, dot, 12, 1, file_type(sb, S_IFDIR))
    root[8:9] = b"."
    _DE.pack_into(root, 12, dotdot, _rl_to_disk(bs - 12), 2, file_type(sb, S_IFDIR))
    root[20:22] = b".."
    version = sb.def_hash_version
    struct.pack_into("<IBBBB", root, DX_ROOT_INFO_OFFSET, 0, version, 8, 0, 0)
    data0[:] = root
    buf0.private = None  # type: ignore[attr-defined]
    root_limit, _node_limit = _limits(inode)
    _write_dx(inode, buf0, DX_ROOT_ENTRIES_OFFSET, root_limit, [(0, l1), (h2, l2)])
    inode.i_flags |= EXT4_INDEX_FL
    st.locs = {t[2]: l1 for t in items[:m]}
    st.locs.update({t[2]: l2 for t in items[m:]})
    st.free = [0] * (inode.size // bs)
    st.hints.clear()
    _dx_add(inode, name, ino, ft)


def _dx_add(inode: Ext4Inode, name: bytes, ino: int, ft: int) -> int:
    """Add to an indexed directory; the entry's readdir position (from its hash)."""
    sb = inode.sb
    st = _state(inode)
    root_limit, node_limit = _limits(inode)
    buf0 = _block(inode, 0)
    root = buf0.data  # type: ignore[attr-defined]
    levels = root[DX_ROOT_INFO_OFFSET + 6]
    if levels >= _levels_max(inode):
        raise corrupted(f"ext4 directory inode {inode.ino}", f"htree depth {levels + 1}")
    major, minor = st.hashes[name] = dx_hash(name, hash_version(inode), sb.hash_seed)
    # the path: (buffer, entries offset, limit, entries, chosen index)
    path: list[tuple[object, int, int, list[tuple[int, int]], int]] = []
    buf, off, limit = buf0, DX_ROOT_ENTRIES_OFFSET, root_limit
    node = 0  # the index node's logical block (the root's is 0)
    for level in range(levels + 1):
        parsed = st.dx.get(node)
        if parsed is None:
            entries = _read_dx(buf.data, off)  # type: ignore[attr-defined]
            if not entries:
                raise corrupted(f"ext4 directory inode {inode.ino}", "empty htree node")
            parsed = st.dx[node] = ([e[0] for e in entries], entries)
        hashes, entries = parsed
        i = max(bisect.bisect_right(hashes, major) - 1, 0)
        path.append((buf, off, limit, entries, i))
        if level < levels:
            node = entries[i][1]
            buf, off, limit = _block(inode, node), DX_NODE_ENTRIES_OFFSET, node_limit
    leaf_lblk = path[-1][3][path[-1][4]][1]
    leaf = _block(inode, leaf_lblk)
    res = _insert_in_block(inode, leaf.data, name, ino, ft, st, leaf_lblk)  # type: ignore[attr-defined]
    if res is not None:
        st.locs[name] = leaf_lblk
        _finish_leaf(inode, leaf)
        return hash2pos(major, minor)
    # split the leaf
    items = _leaf_hashes(inode, leaf.data)  # type: ignore[attr-defined]
    m, h2 = _split_items(items)
    _make_room(inode, path, len(path) - 1)  # may split index nodes or grow the tree
    nl, nbuf = _append_block(inode)
    leaf.data[:] = _fill_leaf(inode, items[:m])  # type: ignore[attr-defined]
    nbuf.data[:] = _fill_leaf(inode, items[m:])  # type: ignore[attr-defined]
    st.hints.pop(leaf_lblk, None)
    st.hints.pop(nl, None)
    for t in items[m:]:
        st.locs[t[2]] = nl
    # re-find the index node holding the leaf's entry (make_room may have moved it)
    _insert_index(inode, leaf_lblk, h2, nl)
    # hashes below the split stay; the split hash itself goes to the new leaf (with the
    # collision bit a lookup finds it in either)
    target = (leaf_lblk, leaf) if major < h2 & ~1 else (nl, nbuf)
    tl, tbuf = target
    res = _insert_in_block(inode, tbuf.data, name, ino, ft, st, tl)  # type: ignore[attr-defined]
    if res is None:
        # the half that should take it is still full (very long names): the other half
        tl, tbuf = (leaf_lblk, leaf) if tbuf is nbuf else (nl, nbuf)
        res = _insert_in_block(inode, tbuf.data, name, ino, ft, st, tl)  # type: ignore[attr-defined]
        if res is None:
            raise kerr(errno.ENOSPC, f"ext4 directory inode {inode.ino}", "htree leaf full")
    st.locs[name] = tl
    _finish_leaf(inode, leaf)
    _finish_leaf(inode, nbuf)
    return hash2pos(major, minor)


def _find_parent(inode: Ext4Inode, child_lblk: int) -> tuple[list[tuple[object, int, int]], int]:
    """The chain of index nodes from the root to the one pointing at ``child_lblk``."""
    root_limit, node_limit = _limits(inode)
    buf0 = _block(inode, 0)
    levels = buf0.data[DX_ROOT_INFO_OFFSET + 6]  # type: ignore[attr-defined]
    # breadth-first over the index (small: at most a few thousand nodes)
    Chain = list[tuple[object, int, int]]
    frontier: list[tuple[Chain, int]] = [([(buf0, DX_ROOT_ENTRIES_OFFSET, root_limit)], 0)]
    for level in range(levels + 1):
        nxt = []
        for chain, _lvl in frontier:
            buf, off, _lim = chain[-1]
            for _h, blk in _read_dx(buf.data, off):  # type: ignore[attr-defined]
                if blk == child_lblk:
                    return chain, level
                if level < levels:
                    node = (_block(inode, blk), DX_NODE_ENTRIES_OFFSET, node_limit)
                    nxt.append((chain + [node], level + 1))
        frontier = nxt
    raise corrupted(f"ext4 directory inode {inode.ino}", f"block {child_lblk} is not indexed")


def _insert_index(inode: Ext4Inode, after_lblk: int, h: int, new_lblk: int) -> None:
    """Add (h, new_lblk) right after the entry pointing at ``after_lblk`` (room was made)."""
    chain, _level = _find_parent(inode, after_lblk)
    buf, off, limit = chain[-1]
    entries = _read_dx(buf.data, off)  # type: ignore[attr-defined]
    i = next(k for k, e in enumerate(entries) if e[1] == after_lblk)
    entries.insert(i + 1, (h, new_lblk))
    _write_dx(inode, buf, off, limit, entries)


def _make_room(inode: Ext4Inode, path: list[tuple[object, int, int, list[tuple[int, int]], int]],
               depth: int) -> None:
    """Ensure the index node at ``path[depth]`` can take one more entry."""
    sb = inode.sb
    buf, off, limit, _entries, _i = path[depth]
    entries = _read_dx(buf.data, off)  # type: ignore[attr-defined]
    if len(entries) < limit:
        return
    root_limit, node_limit = _limits(inode)
    bs = sb.blocksize
    if depth == 0:
        # a full root: move its entries into a new node and grow one level
        levels = buf.data[DX_ROOT_INFO_OFFSET + 6]  # type: ignore[attr-defined]
        if levels + 1 >= _levels_max(inode):
            raise kerr(errno.ENOSPC, f"ext4 directory inode {inode.ino}", "directory index full")
        nl, nbuf = _append_block(inode)
        node = bytearray(bs)
        _DE.pack_into(node, 0, 0, _rl_to_disk(bs), 0, 0)
        nbuf.data[:] = node  # type: ignore[attr-defined]
        _write_dx(inode, nbuf, DX_NODE_ENTRIES_OFFSET, node_limit, entries)
        buf.data[DX_ROOT_INFO_OFFSET + 6] = levels + 1  # type: ignore[attr-defined]
        _write_dx(inode, buf, off, root_limit, [(0, nl)])
        return
    # a full interior node: split it in two, the parent takes the new half
    _make_room(inode, path, depth - 1)
    m = len(entries) // 2
    nl, nbuf = _append_block(inode)
    node = bytearray(bs)
    _DE.pack_into(node, 0, 0, _rl_to_disk(bs), 0, 0)
    nbuf.data[:] = node  # type: ignore[attr-defined]
    upper = entries[m:]
    _write_dx(inode, nbuf, DX_NODE_ENTRIES_OFFSET, node_limit, [(0, upper[0][1])] + upper[1:])
    _write_dx(inode, buf, off, limit, entries[:m])
    _insert_index(inode, _lblk_of(inode, buf), upper[0][0], nl)


def _lblk_of(inode: Ext4Inode, buf: object) -> int:
    pblk = buf.blocknr  # type: ignore[attr-defined]
    for s, n, p, _u in inode.runs():
        if p <= pblk < p + n:
            return s + pblk - p
    raise corrupted(f"ext4 directory inode {inode.ino}", f"block {pblk} not in the directory")


# -- removing and retargeting -------------------------------------------------------------------------
def _locate(inode: Ext4Inode, name: bytes) -> tuple[object, int, list[tuple[int, int, int, int]], int]:
    st = _state(inode)
    lblk = st.locs.get(name)
    if lblk is None:
        raise kerr(errno.ENOENT, name)
    buf = _block(inode, lblk)
    data = buf.data  # type: ignore[attr-defined]
    recs = _walk(data, _limit(inode), inode.sb.blocksize, f"ext4 directory inode {inode.ino}")
    for k, (off, ino, _rl, nl) in enumerate(recs):
        if ino and data[off + 8:off + 8 + nl] == name:
            return buf, lblk, recs, k
    raise corrupted(f"ext4 directory inode {inode.ino}", f"entry {name!r} is not where expected")


def delete_entry(inode: Ext4Inode, name: bytes) -> None:
    """Remove ``name`` from directory ``inode``."""
    _uninline(inode)
    st = _state(inode)
    buf, lblk, recs, k = _locate(inode, name)
    data = buf.data  # type: ignore[attr-defined]
    off, _ino, rl, _nl = recs[k]
    if k > 0:
        poff, pino, prl, pnl = recs[k - 1]
        _DE.pack_into(data, poff, pino, _rl_to_disk(prl + rl), pnl, data[poff + 7])
        recs[k - 1:k + 1] = [(poff, pino, prl + rl, pnl)]
    else:
        struct.pack_into("<I", data, off, 0)
        recs[k] = (off, 0, rl, _nl)
    del st.locs[name]
    st.hashes.pop(name, None)
    st.free[lblk] = _gap(recs)
    st.hints.pop(lblk, None)
    _finish_leaf(inode, buf)
    if inode.dir_cache is not None:
        inode.dir_cache.remove(name)  # type: ignore[attr-defined]
    inode.sb.dirty_inode(inode)


def set_entry(inode: Ext4Inode, name: bytes, ino: int, mode: int) -> None:
    """Point the existing entry ``name`` at another inode (rename over, "..")."""
    _uninline(inode)
    ft = file_type(inode.sb, mode)
    if name == b"..":
        _set_dotdot(inode, ino, ft)
        return
    buf, _lblk, recs, k = _locate(inode, name)
    off = recs[k][0]
    data = buf.data  # type: ignore[attr-defined]
    struct.pack_into("<I", data, off, ino)
    data[off + 7] = ft
    _finish_leaf(inode, buf)
    if inode.dir_cache is not None:
        inode.dir_cache.retarget(name, ino, ft_to_dt(ft))  # type: ignore[attr-defined]


def _set_dotdot(inode: Ext4Inode, ino: int, ft: int) -> None:
    buf = _block(inode, 0)
    data = buf.data  # type: ignore[attr-defined]
    if data[20:22] != b".." or data[8:9] != b".":
        raise corrupted(f"ext4 directory inode {inode.ino}", "block 0 does not start with . and ..")
    struct.pack_into("<I", data, 12, ino)
    data[19] = ft
    if inode.i_flags & EXT4_INDEX_FL:
        sb = inode.sb
        root_limit, _n = _limits(inode)
        _write_dx(inode, buf, DX_ROOT_ENTRIES_OFFSET, root_limit,
                  _read_dx(data, DX_ROOT_ENTRIES_OFFSET))
        del sb
    else:
        _finish_leaf(inode, buf)
    dc = inode.dir_cache
    if dc is not None:
        assert isinstance(dc, DirCache)
        dc.entries[1] = (b"..", ino, dc.entries[1][2])


def is_empty(inode: Ext4Inode) -> bool:
    """Only "." and ".." left."""
    dc = get_cache(inode)
    return len(dc.entries) <= 2


def init_dir_block(inode: Ext4Inode, data: bytearray, parent: int) -> None:
    """The first block of a new directory: "." and ".." (and the checksum tail)."""
    sb = inode.sb
    ft = file_type(sb, S_IFDIR)
    _DE.pack_into(data, 0, inode.ino, 12, 1, ft)
    data[8:9] = b"."
    _DE.pack_into(data, 12, parent, _rl_to_disk(_limit(inode) - 12), 2, ft)
    data[20:22] = b".."


_DT_TO_FT = {1: 5, 2: 3, 4: 2, 6: 4, 8: 1, 10: 7, 12: 6}


def init_block_dir(inode: Ext4Inode, parent: int, entries: list[tuple[bytes, int, int]]) -> None:
    """Give a directory (now without blocks) a first block with "." and "..", then the
    ``entries`` (name, inode, d_type) it held inline."""
    from . import file as f

    sb = inode.sb
    f.allocate(inode, 0, 1, False)
    buf = sb.bcache.getblk(sb.io, inode.bmap(0), sb.blocksize)
    data = bytearray(sb.blocksize)
    init_dir_block(inode, data, parent)
    buf.data[:] = data
    _finish_leaf(inode, buf)
    inode.size = sb.blocksize
    inode.dir_cache = inode.dir_state = None
    for name, ino, dt in entries:
        _linear_add(inode, name, ino, _DT_TO_FT.get(dt, 0) if sb.filetype else 0)
