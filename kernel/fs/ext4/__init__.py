"""ext2/ext3/ext4 (fs/ext4): one driver for all three, registered as "ext4".

Modules follow Linux's files: ``ondisk`` (format), ``super`` (mount),
``inode``, ``extents``, ``indirect``, ``inline`` (block maps), ``dir``
(readdir), ``namei`` (lookups, htree), ``hash``, ``xattr``, ``acl``,
``csum``, and ``jbd2/`` (journal recovery).
"""

from __future__ import annotations

from .super import Ext4Type


def register(registry: object) -> None:
    registry.register(Ext4Type(), "ext3", "ext2")  # type: ignore[attr-defined]
