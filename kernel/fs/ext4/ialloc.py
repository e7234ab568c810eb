"""Inode bitmaps (fs/ext4/ialloc.c, read side: reading and verifying them).

The inode allocator of the write path builds on ``read_inode_bitmap``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import EFSBADCRC, corrupted
from .csum import bitmap_csum
from .ondisk import BG_INODE_BITMAP_CSUM_HI_END, EXT4_BG_INODE_UNINIT

if TYPE_CHECKING:
    from .super import Ext4Super


def read_inode_bitmap(sb: Ext4Super, group: int) -> bytes | None:
    """Group ``group``'s inode bitmap, checksum verified; None while INODE_UNINIT.

    EBADMSG on a checksum mismatch, EUCLEAN for a bad group number, EIO if unreadable.
    """
    if not 0 <= group < sb.group_count:
        raise corrupted("ext4 inode bitmap", f"no group {group}")
    desc = sb.groups[group]
    if sb.gdt_csum and desc[3] & EXT4_BG_INODE_UNINIT:
        return None
    blk = desc[1]
    data = bytes(sb.bread(blk).data[:sb.inodes_per_group // 8])
    if sb.metadata_csum:
        stored = desc[7] >> 32
        calc = bitmap_csum(sb.csum_seed, data)
        if sb.desc_size < BG_INODE_BITMAP_CSUM_HI_END:
            calc &= 0xFFFF
        if calc != stored:
            raise corrupted(f"ext4 inode bitmap of group {group} (block {blk})",
                            "checksum mismatch", EFSBADCRC)
    return data
