"""Open files and the file descriptor table (fs/file.c, fs/file_table.c)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import kerr
from .dcache import Path

if TYPE_CHECKING:
    from .inode import Inode

FMODE_READ = 1
FMODE_WRITE = 2
FMODE_PATH = 4

MAX_FDS = 1 << 20


class File:
    """An open file description: a path, an access mode and a position.

    For directories ``pos`` is the filesystem's readdir cookie (the last
    ``d_off`` returned); for everything else it is a byte offset.
    """

    __slots__ = ("path", "inode", "flags", "fmode", "pos")

    def __init__(self, path: Path, inode: Inode, flags: int, fmode: int) -> None:
        self.path = path
        self.inode = inode
        self.flags = flags
        self.fmode = fmode
        self.pos = 0
        inode.i_count += 1

    def __repr__(self) -> str:
        return f"<File {self.inode!r} flags={self.flags:o}>"


class FdTable:
    """Descriptors are the lowest free numbers, as POSIX requires."""

    def __init__(self) -> None:
        self._files: dict[int, File] = {}
        self._next = 0  # every fd below this is in use

    def install(self, f: File) -> int:
        fd = self._next
        while fd in self._files:
            fd += 1
        if fd >= MAX_FDS:
            raise kerr(errno.EMFILE)
        self._files[fd] = f
        self._next = fd + 1
        return fd

    def get(self, fd: int) -> File:
        f = self._files.get(fd)
        if f is None:
            raise kerr(errno.EBADF, None, f"fd {fd}")
        return f

    def remove(self, fd: int) -> File:
        f = self._files.pop(fd, None)
        if f is None:
            raise kerr(errno.EBADF, None, f"fd {fd}")
        if fd < self._next:
            self._next = fd
        return f

    def __len__(self) -> int:
        return len(self._files)

    def files(self) -> list[tuple[int, File]]:
        return list(self._files.items())
