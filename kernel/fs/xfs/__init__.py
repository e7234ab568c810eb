"""XFS, read-only: every V4 and V5 format mkfs.xfs and Linux produce, with log replay.

The format lives in ``ondisk``; the modules follow Linux's libxfs names
(``sb``, ``bmap``, ``da_btree``, ``dir2_*``, ``attr_*``, ``symlink``,
``log_recover``) and the mount in ``super``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ...vfs.inode import FileSystemType

if TYPE_CHECKING:
    from ...block.blkdev import BlockDevice
    from ...vfs.inode import SuperBlock

# what the probe reads of struct xfs_dsb (offsets checked against ``ondisk`` by the
# tests): the rest of the driver is imported only to mount
_PROBE = struct.Struct(">II76xIIxxxxxxxxH")
# sb_magicnum, sb_blocksize, sb_agblocks, sb_agcount, sb_versionnum
_MAGIC = 0x58465342  # "XFSB"


class XfsType(FileSystemType):
    name = "xfs"

    def probe(self, bdev: BlockDevice) -> bool:
        if bdev.size < 512:
            return False
        magic, bs, agblocks, agcount, version = _PROBE.unpack_from(bdev.read(0, 512), 0)
        return bool(magic == _MAGIC and 512 <= bs <= 65536 and not bs & (bs - 1)
                    and version & 0xF in (4, 5) and agcount > 0 and agblocks > 0)

    def mount(self, kernel: object, bdev: BlockDevice | None, flags: int, options: str) -> SuperBlock:
        from .super import mount

        return mount(kernel, bdev, flags, options)


def register(registry: object) -> None:
    registry.register(XfsType())  # type: ignore[attr-defined]
