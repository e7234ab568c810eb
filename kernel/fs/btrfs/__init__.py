"""btrfs, read-only: single-device filesystems as mkfs.btrfs and Linux make them.

``ondisk`` holds the format, ``ctree`` the generic B-tree and the chunk map,
``inode`` the item families of files and directories, ``compress`` the
extent decompressors and ``super`` the mount.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...vfs.inode import FileSystemType

if TYPE_CHECKING:
    from ...block.blkdev import BlockDevice
    from ...vfs.inode import SuperBlock

# what the probe needs of the format (checked against ``ondisk`` by the tests): the rest
# of the driver is imported only to mount
_SUPER_OFFSET = 0x10000  # the primary superblock
_SUPER_INFO_SIZE = 4096
_MAGIC = b"_BHRfS_M"  # at 0x40 of the superblock


class BtrfsType(FileSystemType):
    name = "btrfs"

    def probe(self, bdev: BlockDevice) -> bool:
        if bdev.size < _SUPER_OFFSET + _SUPER_INFO_SIZE:
            return False
        raw = bytes(bdev.read(_SUPER_OFFSET, 512))
        return raw[0x40:0x48] == _MAGIC

    def mount(self, kernel: object, bdev: BlockDevice | None, flags: int, options: str) -> SuperBlock:
        from .super import mount

        return mount(kernel, bdev, flags, options)


def register(registry: object) -> None:
    registry.register(BtrfsType())  # type: ignore[attr-defined]
