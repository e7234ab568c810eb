"""Extent trees (fs/ext4/extents.c, read side): logical blocks -> physical runs.

The tree's root is the inode's ``i_block`` (a 12-byte header and up to four
entries); index nodes point to blocks holding more nodes; leaves hold
``ext4_extent`` records. A leaf length above 32768 marks an unwritten extent
(it reads as zeros). The whole tree is flattened once per inode into sorted
runs; every node is validated (magic, depth, counts, ordering, block range)
and every non-root node's checksum is verified.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ...errors import EFSBADCRC, corrupted
from .csum import block_csum
from .ondisk import EXT4_EXT_MAGIC, EXT4_EXT_MAX_DEPTH, EXT_INIT_MAX_LEN

if TYPE_CHECKING:
    from .inode import Ext4Inode

_HDR = struct.Struct("<HHHHI")
_TAIL = struct.Struct("<I")
_EXT = struct.Struct("<IHHI")

# a run: (first logical block, block count, first physical block, unwritten)
Run = tuple[int, int, int, bool]
_VERIFIED = 1  # Buffer.private flag: extent block checksum verified


def _entries(data: bytes | bytearray | memoryview, n: int, leaf: bool) -> list[int]:
    """The ``n`` entries after the header, flattened: 4 integers per entry."""
    if not n:
        return []
    return list(struct.unpack_from("<" + ("IHHI" if leaf else "IIHH") * n, data, 12))


def _check_header(inode: Ext4Inode, where: str, data: bytes | bytearray | memoryview, depth: int | None,
                  max_entries: int) -> tuple[int, int]:
    magic, entries, emax, edepth, _gen = _HDR.unpack_from(data, 0)
    what = f"ext4 inode {inode.ino} extent {where}"
    if magic != EXT4_EXT_MAGIC:
        raise corrupted(what, f"bad magic {magic:#x}")
    if depth is not None and edepth != depth:
        raise corrupted(what, f"depth {edepth}, expected {depth}")
    if edepth > EXT4_EXT_MAX_DEPTH:
        raise corrupted(what, f"depth {edepth} too large")
    if emax == 0 or emax > max_entries:
        raise corrupted(what, f"eh_max {emax} invalid (at most {max_entries})")
    if entries > emax:
        raise corrupted(what, f"eh_entries {entries} > eh_max {emax}")
    if entries == 0 and edepth > 0:
        raise corrupted(what, "index node without entries")
    return entries, edepth


def load_extents(inode: Ext4Inode) -> list[Run]:
    """Every run of an extent-mapped inode, sorted by logical block.

    EUCLEAN for a malformed tree, EBADMSG for a node failing its checksum,
    EIO if a node cannot be read.
    """
    sb = inode.sb
    bs = sb.blocksize
    first, limit = sb.first_data_block, sb.blocks_count
    root = inode.i_block
    n, depth = _check_header(inode, "root", root, None, 4)
    node_max = (bs - 12) // 12
    runs: list[Run] = []
    # stack of (node data, entry count, depth, lower bound of logical blocks, upper bound)
    stack: list[tuple[bytes | bytearray | memoryview, int, int, int, int, str]] = [
        (root, n, depth, 0, 1 << 32, "root")]
    visited = 0
    while stack:
        data, n, depth, lo, hi, where = stack.pop()
        vals = _entries(data, n, depth == 0)
        if depth == 0:
            prev_end = lo
            for i in range(0, 4 * n, 4):
                lblk, ln, start_hi, start_lo = vals[i:i + 4]
                unwritten = ln > EXT_INIT_MAX_LEN
                if unwritten:
                    ln -= EXT_INIT_MAX_LEN
                pblk = start_hi << 32 | start_lo
                if ln == 0 or lblk < prev_end or lblk + ln > hi or pblk < first \
                        or pblk + ln > limit:
                    raise corrupted(f"ext4 inode {inode.ino} extent {where}",
                                    f"invalid extent [{lblk}, +{ln}) -> {pblk}")
                prev_end = lblk + ln
                runs.append((lblk, ln, pblk, unwritten))
            continue
        children: list[tuple[int, int]] = []
        for i in range(0, 4 * n, 4):
            lblk, leaf_lo, leaf_hi, _unused = vals[i:i + 4]
            pblk = (leaf_hi & 0xFFFF) << 32 | leaf_lo
            if lblk < lo or (children and lblk <= children[-1][0]) or not first <= pblk < limit:
                raise corrupted(f"ext4 inode {inode.ino} extent {where}",
                                f"invalid index entry {lblk} -> {pblk}")
            children.append((lblk, pblk))
        visited += len(children)
        if visited > limit:
            raise corrupted(f"ext4 inode {inode.ino} extent tree", "too many nodes")
        # push in reverse so leaves come out in logical order
        for j in range(len(children) - 1, -1, -1):
            lblk, pblk = children[j]
            child_hi = children[j + 1][0] if j + 1 < len(children) else hi
            buf = sb.bread(pblk)
            cdata = buf.data
            cwhere = f"block {pblk}"
            cn, _d = _check_header(inode, cwhere, cdata, depth - 1, node_max)
            if sb.metadata_csum and not buf.private == _VERIFIED:
                emax = _HDR.unpack_from(cdata, 0)[2]
                toff = 12 + 12 * emax
                if _TAIL.unpack_from(cdata, toff)[0] != block_csum(inode.csum_seed,
                                                                   memoryview(cdata)[:toff]):
                    raise corrupted(f"ext4 inode {inode.ino} extent block {pblk}",
                                    "checksum mismatch", EFSBADCRC)
                buf.private = _VERIFIED
            stack.append((bytes(cdata[:12 + 12 * cn]), cn, depth - 1, lblk, child_hi, cwhere))
    return runs


# -- write side ------------------------------------------------------------------------------
EXT_UNWRITTEN_MAX_LEN = EXT_INIT_MAX_LEN - 1


def tree_blocks(inode: Ext4Inode) -> list[int]:
    """Every index and leaf block of the inode's extent tree (not the root), in tree order."""
    sb = inode.sb
    out: list[int] = []
    n, depth = _check_header(inode, "root", inode.i_block, None, 4)
    stack = [(inode.i_block, n, depth)]
    while stack:
        data, n, depth = stack.pop()
        if depth == 0:
            continue
        vals = _entries(data, n, False)
        for i in range(4 * n - 4, -1, -4):
            pblk = (vals[i + 2] & 0xFFFF) << 32 | vals[i + 1]
            out.append(pblk)
            if len(out) > sb.blocks_count:
                raise corrupted(f"ext4 inode {inode.ino} extent tree", "too many nodes")
            cdata = bytes(sb.bread(pblk).data)
            cn, _d = _check_header(inode, f"block {pblk}", cdata, depth - 1, (sb.blocksize - 12) // 12)
            stack.append((cdata, cn, depth - 1))
    return out


def _split_runs(runs: list[Run]) -> list[tuple[int, int, int, bool]]:
    """Runs cut to what one extent can hold (32768 blocks, 32767 when unwritten)."""
    out = []
    for lblk, n, pblk, unwritten in runs:
        cap = EXT_UNWRITTEN_MAX_LEN if unwritten else EXT_INIT_MAX_LEN
        while n > cap:
            out.append((lblk, cap, pblk, unwritten))
            lblk, n, pblk = lblk + cap, n - cap, pblk + cap
        out.append((lblk, n, pblk, unwritten))
    return out


def extent_tree_size(n: int, per: int) -> int:
    """Blocks of a packed tree of ``n`` extents (the inode holds 4 entries, a block
    ``per``): what ``store_extents`` builds."""
    total = 0
    while n > 4:
        n = (n + per - 1) // per
        total += n
    return total


def store_extents(inode: Ext4Inode, runs: list[Run], old_blocks: list[int],
                  alloc: object) -> tuple[bytes, list[int]]:
    """Write the tree for ``runs``; returns the new ``i_block`` and the tree's blocks.

    The tree is rebuilt packed (minimal depth, full nodes), reusing the old
    tree's blocks first; blocks no longer needed are freed, new ones come from
    ``alloc(goal)`` (which may raise ENOSPC before anything is changed).
    """
    exts = _split_runs(runs)
    if len(exts) <= 4 and not old_blocks:
        # (most files: every extent in the inode, no tree block before or after)
        root = bytearray(60)
        _HDR.pack_into(root, 0, EXT4_EXT_MAGIC, len(exts), 4, 0, 0)
        at = 12
        for lb, n, p, u in exts:
            _EXT.pack_into(root, at, lb, n + (EXT_INIT_MAX_LEN if u else 0), p >> 32, p & 0xFFFFFFFF)
            at += 12
        return bytes(root), []
    sb = inode.sb
    bs = sb.blocksize
    per = (bs - 12) // 12
    # entries of the bottom level: (first logical block, packed 12 bytes)
    level = [(lb, _EXT.pack(lb, n + (EXT_INIT_MAX_LEN if u else 0), p >> 32,
                       p & 0xFFFFFFFF)) for lb, n, p, u in exts]
    nodes: list[list[tuple[int, list[tuple[int, bytes]]]]] = []  # per level: (depth, entries)
    depth = 0
    while len(level) > 4:
        chunks = [level[i:i + per] for i in range(0, len(level), per)]
        nodes.append([(depth, c) for c in chunks])  # type: ignore[misc]
        depth += 1
        level = [(c[0][0], b"") for c in chunks]  # index entries get their block below
    need = sum(len(lv) for lv in nodes)
    blocks = list(old_blocks[:need])
    goal = exts[0][2] if exts else 0
    while len(blocks) < need:
        blocks.append(alloc(goal))  # type: ignore[operator]
    for b in old_blocks[need:]:
        sb.alloc.free_blocks(b, 1)
    # write the nodes bottom-up, each level's block numbers feeding the next
    k = 0
    child_blocks: list[int] = []
    for lv in nodes:
        these: list[int] = []
        for j, (d, entries) in enumerate(lv):
            blk = blocks[k]
            k += 1
            these.append(blk)
            if d == 0:
                body = b"".join(e[1] for e in entries)
            else:
                body = b"".join(struct.pack("<IIHH", e[0], cb & 0xFFFFFFFF, cb >> 32, 0)
                                for e, cb in zip(entries, child_blocks[j * per:(j + 1) * per],
                                                 strict=False))
            data = bytearray(bs)
            _HDR.pack_into(data, 0, EXT4_EXT_MAGIC, len(entries), per, d, 0)
            data[12:12 + len(body)] = body
            if sb.metadata_csum:
                toff = 12 + 12 * per
                _TAIL.pack_into(data, toff, block_csum(inode.csum_seed, memoryview(data)[:toff]))
            buf = sb.bcache.getblk(sb.io, blk, bs)
            buf.data[:] = data
            buf.private = _VERIFIED
            sb.bcache.mark_dirty(buf)
        child_blocks = these
    root = bytearray(60)
    if depth == 0:
        _HDR.pack_into(root, 0, EXT4_EXT_MAGIC, len(level), 4, 0, 0)
        for i, (_lb, e) in enumerate(level):
            root[12 + 12 * i:24 + 12 * i] = e
    else:
        _HDR.pack_into(root, 0, EXT4_EXT_MAGIC, len(level), 4, depth, 0)
        for i, (lb, _e) in enumerate(level):
            cb = child_blocks[i]
            struct.pack_into("<IIHH", root, 12 + 12 * i, lb, cb & 0xFFFFFFFF, cb >> 32, 0)
    return bytes(root), blocks


_EMPTY_ROOT = _HDR.pack(EXT4_EXT_MAGIC, 0, 4, 0, 0).ljust(60, b"\0")


def empty_root() -> bytes:
    """i_block of an inode with an empty extent tree (bytes: shared, never changed)."""
    return _EMPTY_ROOT
