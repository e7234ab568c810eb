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
