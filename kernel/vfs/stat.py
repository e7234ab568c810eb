"""stat/statx results (fs/stat.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..uapi import STATX_BASIC_STATS, STATX_BTIME, STATX_MNT_ID

if TYPE_CHECKING:
    from .dcache import Mount
    from .inode import Inode


class Stat:
    """What stat(2) and statx(2) report; times in integer nanoseconds.

    Field names follow ``os.stat_result`` (``st_mode``, ``st_mtime_ns``...);
    ``st_birthtime_ns`` is None when the filesystem does not record it, and
    ``stx_mask`` says which fields statx filled.
    """

    __slots__ = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_rdev",
                 "st_size", "st_blksize", "st_blocks", "st_atime_ns", "st_mtime_ns",
                 "st_ctime_ns", "st_birthtime_ns", "st_gen", "stx_mask", "stx_mnt_id")

    def __init__(self, inode: Inode, mnt: Mount | None = None) -> None:
        self.st_mode = inode.mode
        self.st_ino = inode.ino
        self.st_dev = inode.dev
        self.st_nlink = inode.nlink
        self.st_uid = inode.uid
        self.st_gid = inode.gid
        self.st_rdev = inode.rdev
        self.st_size = inode.size
        self.st_blksize = inode.sb.blocksize
        self.st_blocks = inode.blocks
        self.st_atime_ns = inode.atime_ns
        self.st_mtime_ns = inode.mtime_ns
        self.st_ctime_ns = inode.ctime_ns
        self.st_birthtime_ns = inode.btime_ns
        self.st_gen = inode.generation
        mask = STATX_BASIC_STATS
        if inode.btime_ns is not None:
            mask |= STATX_BTIME
        self.stx_mnt_id = 0
        if mnt is not None:
            mask |= STATX_MNT_ID
            self.stx_mnt_id = mnt.id
        self.stx_mask = mask

    @property
    def st_atime(self) -> float:
        return self.st_atime_ns / 1e9

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9

    @property
    def st_ctime(self) -> float:
        return self.st_ctime_ns / 1e9

    def __repr__(self) -> str:
        return ("Stat(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stat):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)
