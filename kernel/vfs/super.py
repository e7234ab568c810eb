"""Mounting and unmounting (fs/super.c, fs/namespace.c) and the filesystem registry."""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from ..errors import kerr
from ..uapi import MNT_DETACH, MNT_FORCE, MS_RDONLY, MS_REMOUNT
from .dcache import Dentry, Mount, MountTable, Path
from .inode import FileSystemType, SuperBlock

if TYPE_CHECKING:
    from ..block.blkdev import BlockDevice

log = logging.getLogger(__name__)


class Registry:
    """Registered filesystem types, in the order ``mount`` without a type tries them."""

    def __init__(self) -> None:
        self._types: dict[str, FileSystemType] = {}

    def register(self, fstype: FileSystemType, *aliases: str) -> None:
        self._types[fstype.name] = fstype
        for alias in aliases:
            self._types[alias] = fstype

    def get(self, name: str) -> FileSystemType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return list(self._types)

    def with_devices(self) -> list[FileSystemType]:
        seen: list[FileSystemType] = []
        for t in self._types.values():
            if t.requires_dev and t not in seen:
                seen.append(t)
        return seen


def new_mount(sb: SuperBlock, flags: int, source: str) -> Mount:
    assert sb.root is not None
    sb.mounts += 1
    return Mount(sb, Dentry(b"/", None, sb.root), flags, source)


def do_mount(kernel: object, mounts: MountTable, registry: Registry, target: Path,
             source: str, bdev: BlockDevice | None, fstype: str, flags: int, data: str) -> Mount:
    """Mount a new superblock (or share the one already on ``bdev``) at ``target``."""
    fs = registry.get(fstype)
    if fs is None:
        raise kerr(errno.ENODEV, fstype, "unknown filesystem type")
    if fs.requires_dev and bdev is None:
        raise kerr(errno.ENOTBLK, source)
    sb: SuperBlock | None = None
    if bdev is not None and bdev.holder is not None:
        held = bdev.holder
        if not isinstance(held, SuperBlock) or held.fstype != fs.name and fs.name not in (
                "ext2", "ext3", "ext4"):
            raise kerr(errno.EBUSY, source)
        sb = held
        if bool(flags & MS_RDONLY) != sb.rdonly:
            raise kerr(errno.EBUSY, source, "already mounted with other read-only flags")
    if sb is None:
        if bdev is not None and bdev.ro and not flags & MS_RDONLY:
            raise kerr(errno.EACCES, source, "block device is write-protected")
        sb = fs.mount(kernel, bdev, flags, data)
        if bdev is not None:
            bdev.holder = sb
    mnt = new_mount(sb, flags, source)
    mounts.attach(mnt, target.mnt, target.dentry)
    return mnt


def do_remount(mnt: Mount, flags: int, data: str) -> None:
    sb = mnt.sb
    sb.remount(flags & ~MS_REMOUNT, data)
    mnt.flags = (mnt.flags & ~MS_RDONLY) | (flags & MS_RDONLY)


def busy(mnt: Mount, files: list[object], cwd_paths: list[Path]) -> bool:
    """Is anything still using this mount (open files, a cwd, child mounts)?"""
    if mnt.children:
        return True
    for f in files:
        if f.path.mnt is mnt:  # type: ignore[attr-defined]
            return True
    return any(p.mnt is mnt for p in cwd_paths)


def do_umount(mounts: MountTable, mnt: Mount, flags: int, in_use: bool) -> None:
    if flags & ~(MNT_FORCE | MNT_DETACH | 4 | 8):
        raise kerr(errno.EINVAL)
    if mnt.parent is None:
        raise kerr(errno.EINVAL, None, "cannot unmount the root filesystem")
    if in_use and not flags & MNT_DETACH:
        raise kerr(errno.EBUSY, mnt.source)
    for child in list(mnt.children):
        do_umount(mounts, child, flags, False)
    mounts.detach(mnt)
    sb = mnt.sb
    sb.mounts -= 1
    if sb.mounts == 0:
        kill_sb(sb)


def kill_sb(sb: SuperBlock) -> None:
    """The last mount of ``sb`` went away: write everything back and release it."""
    try:
        sb.put_super()
    finally:
        if sb.bdev is not None and sb.bdev.holder is sb:
            sb.bdev.holder = None
