"""Block bitmaps (fs/ext4/balloc.c, read side: reading and verifying them).

The allocator of the write path builds on ``read_block_bitmap``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import EFSBADCRC, corrupted
from .csum import bitmap_csum
from .ondisk import BG_BLOCK_BITMAP_CSUM_HI_END, EXT4_BG_BLOCK_UNINIT

if TYPE_CHECKING:
    from .super import Ext4Super


def read_block_bitmap(sb: Ext4Super, group: int) -> bytes | None:
    """Group ``group``'s cluster bitmap, checksum verified; None while BLOCK_UNINIT.

    EBADMSG on a checksum mismatch, EUCLEAN for a bad group number, EIO if unreadable.
    """
    if not 0 <= group < sb.group_count:
        raise corrupted("ext4 block bitmap", f"no group {group}")
    desc = sb.groups[group]
    if sb.gdt_csum and desc[3] & EXT4_BG_BLOCK_UNINIT:
        return None
    blk = desc[0]
    data = bytes(sb.bread(blk).data[:sb.clusters_per_group // 8])
    if sb.metadata_csum:
        stored = desc[7] & 0xFFFFFFFF
        calc = bitmap_csum(sb.csum_seed, data)
        if sb.desc_size < BG_BLOCK_BITMAP_CSUM_HI_END:
            calc &= 0xFFFF
        if calc != stored:
            raise corrupted(f"ext4 block bitmap of group {group} (block {blk})",
                            "checksum mismatch", EFSBADCRC)
    return data
