"""Indirect block maps (fs/ext4/indirect.c, read side): ext2/ext3 files.

``i_block[0..11]`` map the first twelve blocks directly, ``i_block[12]`` is
a block of block numbers, ``[13]`` a block of such blocks, ``[14]`` one more
level. A zero pointer is a hole (a whole subtree of it). The map is walked
once per inode and flattened into runs of contiguous blocks.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ...errors import corrupted
from .ondisk import EXT4_NDIR_BLOCKS

if TYPE_CHECKING:
    from .inode import Ext4Inode

Run = tuple[int, int, int, bool]


def load_indirect(inode: Ext4Inode) -> list[Run]:
    """Every mapped run of an indirect-mapped inode, sorted; EUCLEAN for a bad pointer."""
    sb = inode.sb
    bs = sb.blocksize
    per = bs // 4
    first, limit = sb.first_data_block, sb.blocks_count
    words = struct.unpack_from("<15I", inode.i_block, 0)
    runs: list[list[int]] = []
    nblocks = (inode.size + bs - 1) // bs  # nothing past EOF is read
    block_fmt = struct.Struct(f"<{per}I")

    def bad(where: str, p: int) -> Exception:
        return corrupted(f"ext4 inode {inode.ino} {where}", f"invalid block reference {p}")

    def emit_level1(base: int, ptrs: tuple[int, ...] | list[int], where: str) -> None:
        for i, p in enumerate(ptrs):
            if not p:
                continue
            if not first <= p < limit:
                raise bad(where, p)
            lblk = base + i
            if runs:
                r = runs[-1]
                if r[0] + r[1] == lblk and r[2] + r[1] == p:
                    r[1] += 1
                    continue
            runs.append([lblk, 1, p])

    emit_level1(0, words[:EXT4_NDIR_BLOCKS], "i_block")
    base = EXT4_NDIR_BLOCKS
    for level in (1, 2, 3):
        span = per ** level
        top = words[EXT4_NDIR_BLOCKS + level - 1]
        if top and base < nblocks:
            if not first <= top < limit:
                raise bad("i_block", top)
            # iterative walk: (block, level, logical base)
            stack = [(top, level, base)]
            while stack:
                blk, lvl, b = stack.pop()
                ptrs = block_fmt.unpack_from(sb.bread(blk).data, 0)
                where = f"indirect block {blk}"
                if lvl == 1:
                    emit_level1(b, ptrs, where)
                    continue
                child = per ** (lvl - 1)
                todo = []
                for i, p in enumerate(ptrs):
                    if p and b + i * child < nblocks:
                        if not first <= p < limit:
                            raise bad(where, p)
                        todo.append((p, lvl - 1, b + i * child))
                stack.extend(reversed(todo))
        base += span
    return [(r[0], r[1], r[2], False) for r in runs]


# -- write side ------------------------------------------------------------------------------
def indirect_cover(lo: int, hi: int, per: int) -> int:
    """How many indirect blocks cover logical blocks [lo, hi) (``per`` pointers in a
    block): the most a store of that range can add."""
    total = 0
    start = 12  # the direct pointers
    for levels in (1, 2, 3):
        end = start + per ** levels
        a, b = max(lo, start), min(hi, end)
        if a < b:
            for d in range(levels):  # the blocks at each depth of this subtree
                span = per ** (levels - d)
                total += (b - 1 - start) // span - (a - start) // span + 1
        start = end
    return total


def store_indirect(inode: Ext4Inode, lookup: object, any_mapped: object, lo: int, hi: int,
                   alloc: object) -> int:
    """Bring the indirect tree up to date for logical blocks [lo, hi); returns the change
    in the number of indirect blocks (for ``i_blocks``).

    ``lookup(lblk)`` gives the block a logical block maps to (0: hole),
    ``any_mapped(a, b)`` whether anything in [a, b) is mapped, ``alloc(goal)``
    a new block. Only the indirect blocks covering the range are rewritten;
    an indirect block left without pointers is freed.
    """
    sb = inode.sb
    bs = sb.blocksize
    per = bs // 4
    fmt = struct.Struct(f"<{per}I")
    words = list(struct.unpack_from("<15I", inode.i_block, 0))
    delta = 0

    def free_tree(blk: int, level: int) -> None:
        nonlocal delta
        if level > 1:
            for p in fmt.unpack_from(sb.bread(blk).data, 0):
                if p:
                    free_tree(p, level - 1)
        sb.alloc.free_blocks(blk, 1)
        delta -= 1

    def sync(blk: int, level: int, base: int) -> int:
        nonlocal delta
        span = per ** level
        if not any_mapped(base, base + span):  # type: ignore[operator]
            if blk:
                free_tree(blk, level)
            return 0
        if blk:
            buf = sb.bread(blk)
            ptrs = list(fmt.unpack_from(buf.data, 0))
        else:
            blk = alloc(lookup(base) or lookup(max(lo, base)))  # type: ignore[operator]
            delta += 1
            buf = sb.bcache.getblk(sb.io, blk, bs)
            ptrs = [0] * per
        child = span // per
        first = max(lo - base, 0) // child
        last = min((hi - base + child - 1) // child, per)
        for i in range(first, last):
            if level == 1:
                ptrs[i] = lookup(base + i)  # type: ignore[operator]
            else:
                ptrs[i] = sync(ptrs[i], level - 1, base + i * child)
        fmt.pack_into(buf.data, 0, *ptrs)
        sb.bcache.mark_dirty(buf)
        return blk

    for lb in range(max(lo, 0), min(hi, EXT4_NDIR_BLOCKS)):
        words[lb] = lookup(lb)  # type: ignore[operator]
    base = EXT4_NDIR_BLOCKS
    for level in (1, 2, 3):
        span = per ** level
        if hi > base and lo < base + span:
            words[EXT4_NDIR_BLOCKS + level - 1] = sync(words[EXT4_NDIR_BLOCKS + level - 1],
                                                       level, base)
        base += span
    inode.i_block = struct.pack("<15I", *words)
    return delta
