"""ext2/ext3/ext4 (fs/ext4): one driver for all three, registered as "ext4".

Modules follow Linux's files: ``ondisk`` (format), ``super`` (mount),
``inode``, ``extents``, ``indirect``, ``inline`` (block maps), ``dir``
(readdir), ``namei`` (lookups, htree), ``hash``, ``xattr``, ``acl``,
``csum``, and ``jbd2/`` (journal recovery).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ...vfs.inode import FileSystemType

if TYPE_CHECKING:
    from ...block.blkdev import BlockDevice
    from ...vfs.inode import SuperBlock

# what the probe reads of struct ext4_super_block (offsets checked against ``ondisk`` by
# the tests): the rest of the driver is imported only to mount
SUPERBLOCK_OFFSET = SUPERBLOCK_SIZE = 1024
_PROBE = struct.Struct("<I20xI4xI4xI12xH18xI16xI")
# s_inodes_count, s_log_block_size, s_blocks_per_group, s_inodes_per_group, s_magic,
# s_rev_level, s_feature_incompat
_MAGIC = 0xEF53
_INCOMPAT_JOURNAL_DEV = 0x0008


class Ext4Type(FileSystemType):
    """ext2, ext3 and ext4: one driver, as Linux's ext4 serves all three."""

    name = "ext4"

    def probe(self, bdev: BlockDevice) -> bool:
        if bdev.size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE:
            return False
        raw = bdev.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE)
        inodes, log_bs, bpg, ipg, magic, rev, incompat = _PROBE.unpack_from(raw, 0)
        if magic != _MAGIC or rev > 1 or log_bs > 6:
            return False
        if rev and incompat & _INCOMPAT_JOURNAL_DEV:
            return False  # an external journal, not a filesystem
        return bpg > 0 and ipg > 0 and inodes > 0

    def mount(self, kernel: object, bdev: BlockDevice | None, flags: int, options: str) -> SuperBlock:
        from .super import mount

        return mount(kernel, bdev, flags, options)


def register(registry: object) -> None:
    registry.register(Ext4Type(), "ext3", "ext2")  # type: ignore[attr-defined]
