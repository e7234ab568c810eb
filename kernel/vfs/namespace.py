"""Operations that change the namespace (the second half of fs/namei.c).

Each ``do_*`` function takes the calling task, resolves its paths, performs
Linux's checks in Linux's order (the errno a caller sees when several things
are wrong is the one Linux reports), calls the driver inside one filesystem
transaction, updates times and keeps the dentry cache coherent.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import kerr
from ..uapi import (
    ACL_MASK,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    S_IFSOCK,
    S_ISGID,
    S_ISUID,
    S_ISVTX,
    XATTR_NAME_POSIX_ACL_ACCESS,
    XATTR_NAME_POSIX_ACL_DEFAULT,
)
from .cred import (
    CAP_FOWNER,
    CAP_MKNOD,
    MAY_EXEC,
    MAY_READ,
    MAY_WRITE,
    acl_create_masq,
    acl_to_xattr,
    generic_permission,
    get_acl,
    strip_sgid_on_create,
)
from .dcache import Dentry, Path
from .inode import Inode, NewInode
from .namei import LAST_NORM, LAST_ROOT, Parent

if TYPE_CHECKING:
    from .task import Task


def want_write(task: Task, path: Path, name: bytes) -> None:
    """mnt_want_write: EROFS on a read-only mount or filesystem."""
    if path.mnt.readonly:
        raise kerr(errno.EROFS, name)


def may_create(task: Task, dirp: Path, name: bytes) -> None:
    d = dirp.dentry.inode
    assert d is not None
    if d.nlink == 0:
        raise kerr(errno.ENOENT, name)
    generic_permission(task.cred, d, MAY_WRITE | MAY_EXEC)


def _sticky_denied(task: Task, dir_inode: Inode, inode: Inode) -> bool:
    if not dir_inode.mode & S_ISVTX:
        return False
    fsuid = task.cred.fsuid
    if fsuid == inode.uid or fsuid == dir_inode.uid:
        return False
    return not task.cred.capable(CAP_FOWNER)


def may_delete(task: Task, dirp: Path, victim: Dentry, isdir: bool, name: bytes) -> None:
    inode = victim.inode
    if inode is None:
        raise kerr(errno.ENOENT, name)
    dinode = dirp.dentry.inode
    assert dinode is not None
    generic_permission(task.cred, dinode, MAY_WRITE | MAY_EXEC)
    if _sticky_denied(task, dinode, inode):
        raise kerr(errno.EPERM, name)
    if isdir:
        if not inode.is_dir:
            raise kerr(errno.ENOTDIR, name)
        if victim.is_root or victim.mounted:
            raise kerr(errno.EBUSY, name)
    elif inode.is_dir:
        raise kerr(errno.EISDIR, name)


def touch_dir(dir_inode: Inode, now: int) -> None:
    dir_inode.mtime_ns = dir_inode.ctime_ns = now
    dir_inode.mark_dirty()


def new_inode_spec(task: Task, dir_inode: Inode, mode: int, rdev: int = 0,
                   target: bytes = b"") -> NewInode:
    """inode_init_owner plus umask or inherited default ACL (posix_acl_create)."""
    cred = task.cred
    uid, gid = cred.fsuid, cred.fsgid
    if dir_inode.mode & S_ISGID:
        gid = dir_inode.gid
        if mode & S_IFMT == S_IFDIR:
            mode |= S_ISGID
        else:
            mode = strip_sgid_on_create(cred, dir_inode, mode, gid)
    xattrs: list[tuple[bytes, bytes]] = []
    if mode & S_IFMT == S_IFLNK:
        return NewInode(mode, uid, gid, rdev, target, xattrs)
    default = get_acl(dir_inode, XATTR_NAME_POSIX_ACL_DEFAULT) if dir_inode.sb.posix_acl else None
    if default is None:
        mode &= ~task.umask | S_IFMT
    else:
        if mode & S_IFMT == S_IFDIR:
            xattrs.append((XATTR_NAME_POSIX_ACL_DEFAULT, acl_to_xattr(default)))
        access, perm = acl_create_masq(default, mode & 0o7777)
        mode = (mode & ~0o7777) | perm
        if len(access) > 3 or any(t == ACL_MASK for t, _p, _i in access):
            xattrs.append((XATTR_NAME_POSIX_ACL_ACCESS, acl_to_xattr(access)))
    return NewInode(mode, uid, gid, rdev, target, xattrs)


def _create_last(task: Task, par: Parent, name: bytes, is_dir: bool) -> Dentry:
    """filename_create: the negative dentry to create, or EEXIST/ENOENT."""
    if par.type != LAST_NORM:
        raise kerr(errno.EEXIST, name)
    d = task.walker(name).lookup_last(par)
    if d.inode is not None:
        raise kerr(errno.EEXIST, name)
    if par.trailing and not is_dir:
        raise kerr(errno.ENOENT, name)
    return d


def do_create(task: Task, par: Parent, d: Dentry, mode: int, rdev: int, name: bytes,
              target: bytes = b"") -> Inode:
    """Create ``d`` (negative) in ``par`` after may_create; returns the new inode."""
    dirp = par.path
    dinode = dirp.dentry.inode
    assert dinode is not None
    may_create(task, dirp, name)
    spec = new_inode_spec(task, dinode, mode, rdev, target)
    sb = dinode.sb
    with sb.transaction():
        inode = dinode.create(par.last, spec)
        touch_dir(dinode, inode.ctime_ns or sb.now())
    d.inode = inode
    return inode


def mkdirat(task: Task, start: Path, path: bytes, mode: int) -> None:
    w = task.walker(path)
    par = w.parent(start, path)
    d = _create_last(task, par, path, True)
    want_write(task, par.path, path)
    dinode = par.path.dentry.inode
    assert dinode is not None
    if dinode.nlink >= dinode.sb.max_links:
        may_create(task, par.path, path)
        raise kerr(errno.EMLINK, path)
    do_create(task, par, d, S_IFDIR | (mode & (0o777 | S_ISVTX)), 0, path)


def mknodat(task: Task, start: Path, path: bytes, mode: int, dev: int) -> None:
    ftype = mode & S_IFMT
    if ftype == 0:
        ftype = S_IFREG
    if ftype not in (S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK):
        raise kerr(errno.EPERM if ftype == S_IFDIR else errno.EINVAL, path)
    w = task.walker(path)
    par = w.parent(start, path)
    d = _create_last(task, par, path, False)
    want_write(task, par.path, path)
    if ftype in (S_IFCHR, S_IFBLK) and not task.cred.capable(CAP_MKNOD):
        raise kerr(errno.EPERM, path)
    do_create(task, par, d, ftype | (mode & 0o7777), dev if ftype in (S_IFCHR, S_IFBLK) else 0,
              path)


def symlinkat(task: Task, target: bytes, start: Path, path: bytes) -> None:
    if not target:
        raise kerr(errno.ENOENT, path)
    w = task.walker(path)
    par = w.parent(start, path)
    d = _create_last(task, par, path, False)
    want_write(task, par.path, path)
    do_create(task, par, d, S_IFLNK | 0o777, 0, path, target)


def _may_linkat(task: Task, inode: Inode) -> bool:
    """fs.protected_hardlinks=1 (Debian's default): only owners or those who
    could read and write a regular, non-setid file may link to it."""
    cred = task.cred
    if not task.sysctl.get("fs.protected_hardlinks", 1):
        return True
    if cred.fsuid == inode.uid or cred.capable(CAP_FOWNER):
        return True
    if not inode.is_reg or inode.mode & S_ISUID:
        return False
    if inode.mode & (S_ISGID | 0o010) == (S_ISGID | 0o010):
        return False
    try:
        generic_permission(cred, inode, MAY_READ | MAY_WRITE)
    except OSError:
        return False
    return True


def linkat(task: Task, old: Path, start: Path, path: bytes) -> None:
    w = task.walker(path)
    par = w.parent(start, path)
    if par.type != LAST_NORM:
        raise kerr(errno.EEXIST, path)
    d = _create_last(task, par, path, False)
    if old.mnt is not par.path.mnt:
        raise kerr(errno.EXDEV, path)
    want_write(task, par.path, path)
    inode = old.dentry.inode
    assert inode is not None
    if not _may_linkat(task, inode):
        raise kerr(errno.EPERM, path)
    dinode = par.path.dentry.inode
    assert dinode is not None
    may_create(task, par.path, path)
    if inode.is_dir:
        raise kerr(errno.EPERM, path)
    if inode.nlink == 0:
        raise kerr(errno.ENOENT, path)
    if inode.nlink >= inode.sb.max_links:
        raise kerr(errno.EMLINK, path)
    sb = dinode.sb
    with sb.transaction():
        dinode.link(par.last, inode)
        now = sb.now()
        inode.ctime_ns = now
        inode.mark_dirty()
        touch_dir(dinode, now)
    d.inode = inode


def unlinkat(task: Task, start: Path, path: bytes, rmdir: bool) -> None:
    w = task.walker(path)
    par = w.parent(start, path)
    if par.type != LAST_NORM:
        if rmdir:
            code = {LAST_ROOT: errno.EBUSY, 2: errno.EINVAL, 3: errno.ENOTEMPTY}[par.type]
            raise kerr(code, path)
        raise kerr(errno.EISDIR, path)
    want_write(task, par.path, path)
    d = w.lookup_last(par)
    if d.inode is None:
        raise kerr(errno.ENOENT, path)
    if not rmdir and par.trailing:
        raise kerr(errno.EISDIR if d.inode.is_dir else errno.ENOTDIR, path)
    may_delete(task, par.path, d, rmdir, path)
    inode = d.inode
    dinode = par.path.dentry.inode
    assert dinode is not None
    if d.mounted:
        raise kerr(errno.EBUSY, path)
    sb = dinode.sb
    with sb.transaction():
        if rmdir:
            dinode.rmdir(par.last, inode)
        else:
            dinode.unlink(par.last, inode)
        now = sb.now()
        inode.ctime_ns = now
        inode.mark_dirty()
        touch_dir(dinode, now)
        d.drop()
        if inode.nlink == 0 and inode.i_count == 0:
            inode.evict()


def _is_ancestor(a: Dentry, b: Dentry) -> bool:
    """True if ``a`` is ``b`` or one of b's ancestors (within one superblock)."""
    d = b
    while True:
        if d is a:
            return True
        if d.is_root:
            return False
        d = d.parent


def renameat2(task: Task, old_start: Path, old_path: bytes, new_start: Path, new_path: bytes,
              flags: int) -> None:
    if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT):
        raise kerr(errno.EINVAL, old_path)
    if flags & RENAME_EXCHANGE and flags & (RENAME_NOREPLACE | RENAME_WHITEOUT):
        raise kerr(errno.EINVAL, old_path)
    if flags & RENAME_WHITEOUT:
        raise kerr(errno.EINVAL, old_path, "RENAME_WHITEOUT is not supported")
    old_par = task.walker(old_path).parent(old_start, old_path)
    new_par = task.walker(new_path).parent(new_start, new_path)
    if old_par.path.mnt is not new_par.path.mnt:
        raise kerr(errno.EXDEV, new_path)
    if old_par.type != LAST_NORM:
        raise kerr(errno.EBUSY, old_path)
    if new_par.type != LAST_NORM:
        raise kerr(errno.EEXIST if flags & RENAME_NOREPLACE else errno.EBUSY, new_path)
    want_write(task, old_par.path, old_path)
    old_d = task.walker(old_path).lookup_last(old_par)
    if old_d.inode is None:
        raise kerr(errno.ENOENT, old_path)
    new_d = task.walker(new_path).lookup_last(new_par)
    if flags & RENAME_NOREPLACE and new_d.inode is not None:
        raise kerr(errno.EEXIST, new_path)
    exchange = bool(flags & RENAME_EXCHANGE)
    if exchange:
        if new_d.inode is None:
            raise kerr(errno.ENOENT, new_path)
        if not new_d.inode.is_dir and new_par.trailing:
            raise kerr(errno.ENOTDIR, new_path)
    if not old_d.inode.is_dir:
        if old_par.trailing:
            raise kerr(errno.ENOTDIR, old_path)
        if new_par.trailing and not exchange:
            raise kerr(errno.ENOTDIR, new_path)
    # lock_rename's trap: no directory may move below itself
    if _is_ancestor(old_d, new_par.path.dentry):
        raise kerr(errno.EINVAL, old_path)
    if _is_ancestor(new_d, old_par.path.dentry) and new_d.inode is not None:
        raise kerr(errno.EINVAL if exchange else errno.ENOTEMPTY, new_path)
    inode, target = old_d.inode, new_d.inode
    if inode is target:
        return
    old_dir, new_dir = old_par.path.dentry.inode, new_par.path.dentry.inode
    assert old_dir is not None and new_dir is not None
    is_dir = inode.is_dir
    new_is_dir = target is not None and target.is_dir
    may_delete(task, old_par.path, old_d, is_dir, old_path)
    if target is None:
        may_create(task, new_par.path, new_path)
    else:
        may_delete(task, new_par.path, new_d, is_dir if not exchange else new_is_dir, new_path)
    if old_dir is not new_dir:
        if is_dir:
            generic_permission(task.cred, inode, MAY_WRITE)
        if exchange and new_is_dir:
            generic_permission(task.cred, target, MAY_WRITE)  # type: ignore[arg-type]
    if old_d.mounted or new_d.mounted:
        raise kerr(errno.EBUSY, old_path)
    if not exchange and is_dir and old_dir is not new_dir and target is None \
            and new_dir.nlink >= new_dir.sb.max_links:
        raise kerr(errno.EMLINK, new_path)
    sb = old_dir.sb
    with sb.transaction():
        old_dir.rename(old_par.last, inode, new_dir, new_par.last, target, flags)
        now = sb.now()
        inode.ctime_ns = now
        inode.mark_dirty()
        if target is not None:
            target.ctime_ns = now
            target.mark_dirty()
        touch_dir(old_dir, now)
        if new_dir is not old_dir:
            touch_dir(new_dir, now)
        if exchange:
            old_name, new_name = old_d.name, new_d.name
            old_parent, new_parent = old_d.parent, new_d.parent
            old_d.drop()
            new_d.drop()
            old_d.parent, old_d.name = new_parent, new_name
            new_d.parent, new_d.name = old_parent, old_name
            for d in (old_d, new_d):
                if d.parent.children is None:
                    d.parent.children = {}
                d.parent.children[d.name] = d
        else:
            if target is not None:
                new_d.drop()
                if target.nlink == 0 and target.i_count == 0:
                    target.evict()
            old_d.move(new_par.path.dentry, new_par.last)
