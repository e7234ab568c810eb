"""Path walking (fs/namei.c): components, symlinks, '..' across mounts.

Rules kept from Linux:
  * a path of PATH_MAX (4096) bytes or more is ENAMETOOLONG, a component
    over NAME_MAX (255) too; an empty path is ENOENT unless AT_EMPTY_PATH;
  * every directory passed through needs search (exec) permission;
  * symlinks in the middle of a path are always followed, the last one only
    when asked; more than 40 followed in one walk is ELOOP;
  * a trailing slash demands a directory, and follows a final symlink;
  * '..' never climbs above the task's root and crosses mount points.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import kerr
from ..uapi import MAXSYMLINKS, NAME_MAX, PATH_MAX
from .cred import MAY_EXEC, Cred, generic_permission
from .dcache import Dentry, MountTable, Path

# byte values to look for in names (an int needle: `b"/" in name` would first try b"/"
# as an integer, and build the error message of that attempt to drop it, at every call)
SLASH, NUL = 0x2F, 0

if TYPE_CHECKING:
    from .inode import Inode

LAST_NORM = 0
LAST_ROOT = 1
LAST_DOT = 2
LAST_DOTDOT = 3


def permission(cred: Cred, inode: Inode, mask: int) -> None:
    """inode_permission without the read-only check (callers do that first)."""
    generic_permission(cred, inode, mask)


@dataclass
class Parent:
    """The result of walking to the parent of a path's last component."""

    path: Path
    last: bytes
    type: int
    trailing: bool  # the path ended in '/'


class Walker:
    """One path walk (Linux's nameidata) for a task."""

    __slots__ = ("mounts", "root", "cred", "links", "name")

    def __init__(self, mounts: MountTable, root: Path, cred: Cred, name: bytes) -> None:
        self.mounts = mounts
        self.root = root
        self.cred = cred
        self.links = 0
        self.name = name

    # -- steps -----------------------------------------------------------------------
    def err(self, code: int) -> OSError:
        return kerr(code, self.name)

    def dotdot(self, cur: Path) -> Path:
        mnt, d = cur
        root = self.root
        while True:
            if mnt is root.mnt and d is root.dentry:
                return Path(mnt, d)
            if d is not mnt.root:
                parent = d.parent
                return self.mounts.follow(Path(mnt, parent))
            if mnt.parent is None:
                return Path(mnt, d)
            assert mnt.mountpoint is not None
            d = mnt.mountpoint
            mnt = mnt.parent

    def step(self, cur: Path, name: bytes) -> Path:
        """Look ``name`` up in directory ``cur`` (which must be searchable)."""
        inode = cur.dentry.inode
        assert inode is not None
        generic_permission(self.cred, inode, MAY_EXEC)
        if name == b".":
            return cur
        if name == b"..":
            return self.dotdot(cur)
        if len(name) > NAME_MAX:
            raise self.err(errno.ENAMETOOLONG)
        d = cur.dentry.cached(name)
        if d is None:
            if inode.nlink == 0:  # a removed directory has no entries
                raise self.err(errno.ENOENT)
            d = cur.dentry.lookup(name)
        if d.mounted:
            return self.mounts.follow(Path(cur.mnt, d))
        return Path(cur.mnt, d)

    def follow_link(self, base: Path, link: Inode) -> Path:
        """Resolve a symlink found in directory ``base`` to what it names."""
        self.links += 1
        if self.links > MAXSYMLINKS:
            raise self.err(errno.ELOOP)
        target = link.readlink()
        if not target:
            raise self.err(errno.ENOENT)
        start = self.root if target.startswith(b"/") else base
        return self.walk(start, target, follow=True)

    # -- whole walks --------------------------------------------------------------------
    def walk(self, start: Path, path: bytes, follow: bool) -> Path:
        """Resolve ``path`` from ``start``. The result may be negative (no inode)."""
        if path and SLASH not in path:
            # one component, what every *at() call on a name in a directory looks up
            dinode = start.dentry.inode
            if dinode is None:
                raise self.err(errno.ENOENT)
            if not dinode.is_dir:
                raise self.err(errno.ENOTDIR)
            nxt = self.step(start, path)
            inode = nxt.dentry.inode
            if follow and inode is not None and inode.is_lnk:
                nxt = self.follow_link(start, inode)
            return nxt
        if path.startswith(b"/"):
            start = self.root
        comps = [c for c in path.split(b"/") if c]
        trailing = path.endswith(b"/")
        cur = start
        last = len(comps) - 1
        for i, name in enumerate(comps):
            dinode = cur.dentry.inode
            if dinode is None:
                raise self.err(errno.ENOENT)
            if not dinode.is_dir:
                raise self.err(errno.ENOTDIR)
            nxt = self.step(cur, name)
            inode = nxt.dentry.inode
            if inode is None:
                if i < last:
                    raise self.err(errno.ENOENT)
                if trailing:
                    return nxt  # callers that create directories accept this
                return nxt
            if inode.is_lnk and (i < last or follow or trailing):
                nxt = self.follow_link(cur, inode)
                inode = nxt.dentry.inode
                if inode is None and i < last:
                    raise self.err(errno.ENOENT)
            if (i < last or trailing) and inode is not None and not inode.is_dir:
                raise self.err(errno.ENOTDIR)
            cur = nxt
        return cur

    def parent(self, start: Path, path: bytes) -> Parent:
        """Walk to the directory holding the last component (filename_parentat)."""
        if path.startswith(b"/"):
            start = self.root
        stripped = path.rstrip(b"/")
        trailing = len(stripped) != len(path)
        if not stripped:
            return Parent(start, b"", LAST_ROOT, trailing)
        head, sep, last = stripped.rpartition(b"/")
        if sep:
            dirp = self.walk(start, head + b"/" if head else b"/", follow=True)
        else:
            dirp = start
        inode = dirp.dentry.inode
        if inode is None:
            raise self.err(errno.ENOENT)
        if not inode.is_dir:
            raise self.err(errno.ENOTDIR)
        # link_path_walk checks search permission before every component,
        # the last one included.
        generic_permission(self.cred, inode, MAY_EXEC)
        kind = LAST_DOT if last == b"." else LAST_DOTDOT if last == b".." else LAST_NORM
        return Parent(dirp, last, kind, trailing)

    def lookup_last(self, parent: Parent) -> Dentry:
        """The (possibly negative) dentry of the last component, in its parent.

        Unlike ``step`` this asks for no permission: Linux's
        lookup_one_qstr_excl leaves that to may_create/may_delete.
        """
        d = parent.path.dentry
        c = d.cached(parent.last)
        if c is not None:
            return c
        if len(parent.last) > NAME_MAX:  # what the filesystem's lookup reports
            raise self.err(errno.ENAMETOOLONG)
        inode = d.inode
        assert inode is not None
        if inode.nlink == 0:
            return Dentry(parent.last, d, None)  # dead directory: never cache into it
        return d.lookup(parent.last)


def check_path(path: bytes, empty_ok: bool = False) -> None:
    if NUL in path:
        raise kerr(errno.EINVAL, path, "path contains a NUL byte")
    if len(path) >= PATH_MAX:
        raise kerr(errno.ENAMETOOLONG, path)
    if not path and not empty_ok:
        raise kerr(errno.ENOENT, path)
