"""btrfs, read-only: single-device filesystems as mkfs.btrfs and Linux make them.

``ondisk`` holds the format, ``ctree`` the generic B-tree and the chunk map,
``inode`` the item families of files and directories, ``compress`` the
extent decompressors and ``super`` the mount.
"""

from __future__ import annotations

from .super import BtrfsType


def register(registry: object) -> None:
    registry.register(BtrfsType())  # type: ignore[attr-defined]
