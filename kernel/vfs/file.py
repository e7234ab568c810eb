"""Open files and the file descriptor table (fs/file.c, fs/file_table.c)."""

from __future__ import annotations

import errno
import heapq
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
    """Descriptors are the lowest free numbers, as POSIX requires.

    The free numbers below ``_top`` (one past the highest ever used) are kept in a heap, so
    the lowest free one is found in logarithmic time however many descriptors are open
    (lklfuse holds one per inode the host knows: tens of thousands, with holes wherever the
    host forgot one), where a scan from the lowest hole went past every open one.
    """

    def __init__(self) -> None:
        self._files: dict[int, File] = {}
        self._top = 0  # every fd from here up is free
        self._holes: list[int] = []  # the free fds below _top, a heap

    def install(self, f: File) -> int:
        if self._holes:
            fd = heapq.heappop(self._holes)
        else:
            fd = self._top
            if fd >= MAX_FDS:
                raise kerr(errno.EMFILE)
            self._top = fd + 1
        self._files[fd] = f
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
        heapq.heappush(self._holes, fd)
        return f

    def __len__(self) -> int:
        return len(self._files)

    def files(self) -> list[tuple[int, File]]:
        return list(self._files.items())
