"""A task's filesystem context: credentials, root, cwd, umask and open files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cred import Cred
from .dcache import Path
from .file import FdTable
from .namei import Walker

if TYPE_CHECKING:
    from .dcache import MountTable


class Task:
    def __init__(self, mounts: MountTable, root: Path, cred: Cred | None = None,
                 sysctl: dict[str, int] | None = None) -> None:
        self.mounts = mounts
        self.sysctl = sysctl if sysctl is not None else {}
        self.cred = cred or Cred()
        self.root = root
        self.cwd = root
        self.umask = 0o022
        self.files = FdTable()
        self._hold(root)
        self._hold(root)

    @staticmethod
    def _hold(path: Path) -> None:
        assert path.dentry.inode is not None
        path.dentry.inode.i_count += 1

    @staticmethod
    def _release(path: Path) -> None:
        inode = path.dentry.inode
        assert inode is not None
        inode.i_count -= 1
        if inode.i_count == 0 and inode.nlink == 0:
            with inode.sb.transaction():
                inode.evict()

    def set_cwd(self, path: Path) -> None:
        self._hold(path)
        old, self.cwd = self.cwd, path
        self._release(old)

    def set_root(self, path: Path) -> None:
        self._hold(path)
        old, self.root = self.root, path
        self._release(old)

    def walker(self, name: bytes) -> Walker:
        return Walker(self.mounts, self.root, self.cred, name)
