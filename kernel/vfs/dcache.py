"""Dentries and mounts: the name cache and the mount tree (fs/dcache.c, fs/namespace.c).

A ``Dentry`` names an inode (or, negative, the absence of one) inside its
parent. The VFS keeps dentries coherent: every namespace change goes through
it, so a cached dentry is always right. A ``Path`` is a (Mount, Dentry) pair,
as Linux's ``struct path``; crossing a mount point swaps the pair.
"""

from __future__ import annotations

import errno
import itertools
import weakref
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from ..errors import kerr
from ..uapi import MS_RDONLY

if TYPE_CHECKING:
    from .inode import Inode, SuperBlock


# The dentry cache is bounded: past DCACHE_LIMIT dentries the least recently
# created unused leaves are forgotten (Linux's dentry LRU and shrinker). A
# dentry is in use while it has cached children, a mount on it, or its inode
# is held (open files, cwd, root); those stay.
DCACHE_LIMIT = 200_000
_lru: deque[weakref.ref[Dentry]] = deque()


def _account(d: Dentry) -> None:
    _lru.append(weakref.ref(d))
    if len(_lru) > DCACHE_LIMIT:
        shrink(len(_lru) - DCACHE_LIMIT * 3 // 4)


def shrink(count: int) -> int:
    """Forget up to ``count`` unused dentries, oldest first; return how many went."""
    dropped = 0
    for _ in range(len(_lru)):
        if dropped >= count:
            break
        ref = _lru.popleft()
        d = ref()
        if d is None:
            dropped += 1
            continue
        inode = d.inode
        if d.children or d.mounted or d.parent is d or (inode is not None and inode.i_count):
            _lru.append(ref)
            continue
        ch = d.parent.children
        if ch is not None and ch.get(d.name) is d:
            del ch[d.name]
        dropped += 1
    return dropped


class Dentry:
    __slots__ = ("name", "parent", "inode", "children", "mounted", "__weakref__")

    def __init__(self, name: bytes, parent: Dentry | None, inode: Inode | None) -> None:
        self.name = name
        self.parent = parent if parent is not None else self
        self.inode = inode
        self.children: dict[bytes, Dentry] | None = None
        self.mounted = 0  # mounts stacked on this dentry

    def __repr__(self) -> str:
        return f"<Dentry {self.name!r} {self.inode!r}>"

    @property
    def is_root(self) -> bool:
        return self.parent is self

    def cached(self, name: bytes) -> Dentry | None:
        ch = self.children
        return ch.get(name) if ch is not None else None

    def add(self, name: bytes, inode: Inode | None) -> Dentry:
        d = Dentry(name, self, inode)
        if self.children is None:
            self.children = {}
        self.children[name] = d
        _account(d)
        return d

    def lookup(self, name: bytes) -> Dentry:
        """The child dentry for ``name``, asking the filesystem on a cache miss."""
        ch = self.children
        if ch is not None:
            d = ch.get(name)
            if d is not None:
                return d
        assert self.inode is not None
        inode = self.inode.lookup(name)
        if inode is not None and inode.is_dir:
            d = self
            while True:  # d_splice_alias: a directory among its own ancestors
                if d.inode is inode:
                    raise kerr(errno.ELOOP, name, f"directory loop: directory inode "
                               f"{inode.ino} is its own ancestor here (damaged filesystem)")
                if d.parent is d:
                    break
                d = d.parent
        return self.add(name, inode)

    def drop(self) -> None:
        """Remove from the parent's cache (the entry is gone or may be stale)."""
        ch = self.parent.children
        if ch is not None and ch.get(self.name) is self:
            del ch[self.name]

    def move(self, new_parent: Dentry, new_name: bytes) -> None:
        """d_move: this dentry now lives at ``new_parent/new_name``."""
        self.drop()
        old = new_parent.cached(new_name)
        if old is not None:
            old.drop()
        self.parent = new_parent
        self.name = new_name
        if new_parent.children is None:
            new_parent.children = {}
        new_parent.children[new_name] = self


_mount_ids = itertools.count(1)


class Mount:
    """One mount: a superblock's tree attached at a dentry of a parent mount."""

    __slots__ = ("sb", "root", "parent", "mountpoint", "flags", "id", "children", "source")

    def __init__(self, sb: SuperBlock, root: Dentry, flags: int, source: str = "") -> None:
        self.sb = sb
        self.root = root
        self.parent: Mount | None = None
        self.mountpoint: Dentry | None = None
        self.flags = flags
        self.id = next(_mount_ids)
        self.children: list[Mount] = []
        self.source = source

    def __repr__(self) -> str:
        return f"<Mount {self.id} {self.sb.fstype} {self.source}>"

    @property
    def readonly(self) -> bool:
        return bool(self.flags & MS_RDONLY) or self.sb.rdonly


class Path(NamedTuple):
    mnt: Mount
    dentry: Dentry

    @property
    def inode(self) -> Inode | None:
        return self.dentry.inode


class MountTable:
    """Which mount covers which (mount, dentry): Linux's mount hash."""

    def __init__(self) -> None:
        self._map: dict[tuple[Mount, Dentry], list[Mount]] = {}

    def attach(self, child: Mount, parent: Mount, mountpoint: Dentry) -> None:
        child.parent = parent
        child.mountpoint = mountpoint
        parent.children.append(child)
        mountpoint.mounted += 1
        self._map.setdefault((parent, mountpoint), []).append(child)

    def detach(self, child: Mount) -> None:
        parent, mp = child.parent, child.mountpoint
        assert parent is not None and mp is not None
        stack = self._map[(parent, mp)]
        stack.remove(child)
        if not stack:
            del self._map[(parent, mp)]
        parent.children.remove(child)
        mp.mounted -= 1
        child.parent = None
        child.mountpoint = None

    def lookup(self, mnt: Mount, dentry: Dentry) -> Mount | None:
        stack = self._map.get((mnt, dentry))
        return stack[-1] if stack else None

    def follow(self, path: Path) -> Path:
        """Step down through every mount stacked on ``path``."""
        mnt, d = path
        while d.mounted:
            child = self.lookup(mnt, d)
            if child is None:
                break
            mnt, d = child, child.root
        return Path(mnt, d)

    def all(self) -> list[Mount]:
        return [m for stack in self._map.values() for m in stack]
