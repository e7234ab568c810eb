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
