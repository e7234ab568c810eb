"""Attribute changes (fs/attr.c, fs/open.c, fs/utimes.c): chmod, chown, utimens, truncate."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import kerr
from ..uapi import S_ISGID, S_ISUID, UTIME_NOW, UTIME_OMIT, XATTR_NAME_POSIX_ACL_ACCESS
from .cred import (
    CAP_CHOWN,
    CAP_FSETID,
    MAY_WRITE,
    acl_chmod,
    acl_to_xattr,
    generic_permission,
    get_acl,
    is_owner_or_cap,
)
from .dcache import Path
from .inode import Inode, SetAttr

if TYPE_CHECKING:
    from .task import Task


def _want_write(path: Path, name: bytes | None) -> None:
    if path.mnt.readonly:
        raise kerr(errno.EROFS, name)


def kill_suid_sgid(task: Task, inode: Inode) -> int | None:
    """file_remove_privs: the mode without setuid/setgid-exec, for writers
    without CAP_FSETID; None when nothing changes."""
    mode = inode.mode
    if not inode.is_reg:
        return None
    kill = mode & S_ISUID
    if mode & (S_ISGID | 0o010) == (S_ISGID | 0o010):
        kill |= S_ISGID
    if not kill or task.cred.capable(CAP_FSETID):
        return None
    return mode & ~kill


def chmod(task: Task, path: Path, mode: int, name: bytes | None) -> None:
    inode = path.dentry.inode
    assert inode is not None
    _want_write(path, name)
    if inode.is_lnk:
        raise kerr(errno.EOPNOTSUPP, name)
    if not is_owner_or_cap(task.cred, inode):
        raise kerr(errno.EPERM, name)
    mode &= 0o7777
    if not task.cred.in_group(inode.gid) and not task.cred.capable(CAP_FSETID):
        mode &= ~S_ISGID
    sb = inode.sb
    with sb.transaction():
        inode.setattr(SetAttr(mode=(inode.mode & ~0o7777) | mode, ctime_ns=sb.now()))
        if sb.posix_acl:
            acl = get_acl(inode)
            if acl is not None:
                inode.setxattr(XATTR_NAME_POSIX_ACL_ACCESS, acl_to_xattr(acl_chmod(acl, mode)), 0)
                inode.acl_cache = None


def chown(task: Task, path: Path, uid: int, gid: int, name: bytes | None) -> None:
    inode = path.dentry.inode
    assert inode is not None
    _want_write(path, name)
    cred = task.cred
    uid = None if uid in (-1, 0xFFFFFFFF) else uid  # type: ignore[assignment]
    gid = None if gid in (-1, 0xFFFFFFFF) else gid  # type: ignore[assignment]
    if uid is not None:
        if not (cred.fsuid == inode.uid and uid == inode.uid) and not cred.capable(CAP_CHOWN):
            raise kerr(errno.EPERM, name)
    if gid is not None:
        if not (cred.fsuid == inode.uid and (cred.in_group(gid) or gid == inode.gid)) \
                and not cred.capable(CAP_CHOWN):
            raise kerr(errno.EPERM, name)
    attr = SetAttr(uid=uid, gid=gid, ctime_ns=inode.sb.now())
    if not inode.is_dir:
        mode = inode.mode & ~S_ISUID
        new_gid = inode.gid if gid is None else gid
        if inode.mode & S_ISGID:
            if inode.mode & 0o010 or not (cred.in_group(new_gid) or cred.capable(CAP_FSETID)):
                mode &= ~S_ISGID
        if mode != inode.mode:
            attr.mode = mode
    with inode.sb.transaction():
        inode.setattr(attr)


def _nsec_ok(ns: int) -> bool:
    return 0 <= ns < 1_000_000_000 or ns in (UTIME_NOW, UTIME_OMIT)


def check_times(times: tuple[tuple[int, int], tuple[int, int]] | None) -> bool:
    """Validate utimensat times; False when both are UTIME_OMIT (nothing to do)."""
    if times is None:
        return True
    if not _nsec_ok(times[0][1]) or not _nsec_ok(times[1][1]):
        raise kerr(errno.EINVAL)
    return not (times[0][1] == UTIME_OMIT and times[1][1] == UTIME_OMIT)


def utimens(task: Task, path: Path, times: tuple[tuple[int, int], tuple[int, int]] | None,
            name: bytes | None) -> None:
    inode = path.dentry.inode
    assert inode is not None
    _want_write(path, name)
    if times is not None and times[0][1] == UTIME_NOW and times[1][1] == UTIME_NOW:
        times = None
    now = inode.sb.now()
    attr = SetAttr(ctime_ns=now)
    explicit = False
    if times is None:
        attr.atime_ns = attr.mtime_ns = now
    else:
        (asec, ansec), (msec, mnsec) = times
        if ansec == UTIME_NOW:
            attr.atime_ns = now
        elif ansec != UTIME_OMIT:
            attr.atime_ns = asec * 1_000_000_000 + ansec
            explicit = True
        if mnsec == UTIME_NOW:
            attr.mtime_ns = now
        elif mnsec != UTIME_OMIT:
            attr.mtime_ns = msec * 1_000_000_000 + mnsec
            explicit = True
    cred = task.cred
    if explicit:
        if not is_owner_or_cap(cred, inode):
            raise kerr(errno.EPERM, name)
    elif not is_owner_or_cap(cred, inode):
        generic_permission(cred, inode, MAY_WRITE)
    with inode.sb.transaction():
        inode.setattr(attr)


def truncate(task: Task, inode: Inode, length: int, name: bytes | None) -> None:
    """do_truncate: the checks common to truncate(2) and ftruncate(2) are done."""
    if length > inode.sb.maxbytes:
        raise kerr(errno.EFBIG, name)
    now = inode.sb.now()
    attr = SetAttr(size=length, mtime_ns=now, ctime_ns=now)
    mode = kill_suid_sgid(task, inode)
    if mode is not None:
        attr.mode = mode
    with inode.sb.transaction():
        inode.setattr(attr)
