"""Extended attributes (fs/xattr.c, fs/posix_acl.c): checks, then the driver.

Names are full (``b"user.comment"``). The VFS validates names and sizes,
applies Linux's namespace rules (user.* only on regular files and
directories, trusted.* only with CAP_SYS_ADMIN) and keeps the mode and the
access ACL in step, as posix_acl_update_mode does.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import kerr
from ..uapi import (
    S_ISGID,
    S_ISVTX,
    XATTR_CREATE,
    XATTR_NAME_MAX,
    XATTR_NAME_POSIX_ACL_ACCESS,
    XATTR_NAME_POSIX_ACL_DEFAULT,
    XATTR_REPLACE,
    XATTR_SIZE_MAX,
)
from .cred import (
    CAP_FSETID,
    CAP_SYS_ADMIN,
    MAY_READ,
    MAY_WRITE,
    acl_equiv_mode,
    acl_from_xattr,
    acl_valid,
    generic_permission,
    is_owner_or_cap,
)
from .dcache import Path
from .inode import Inode, SetAttr

if TYPE_CHECKING:
    from .task import Task

PREFIXES = (b"user.", b"trusted.", b"security.", b"system.", b"btrfs.")  # btrfs: properties
ACL_NAMES = (XATTR_NAME_POSIX_ACL_ACCESS, XATTR_NAME_POSIX_ACL_DEFAULT)


def check_name(name: bytes) -> None:
    if not name or len(name) > XATTR_NAME_MAX:
        raise kerr(errno.ERANGE, name)
    if not name.startswith(PREFIXES):
        raise kerr(errno.EOPNOTSUPP, name)
    if name.startswith(b"system.") and name not in ACL_NAMES:
        raise kerr(errno.EOPNOTSUPP, name)
    if name in PREFIXES:
        raise kerr(errno.EINVAL, name)


def xattr_permission(task: Task, inode: Inode, name: bytes, mask: int) -> None:
    if name.startswith((b"security.", b"system.")):
        return
    if name.startswith(b"trusted."):
        if not task.cred.capable(CAP_SYS_ADMIN):
            raise kerr(errno.EPERM if mask & MAY_WRITE else errno.ENODATA, name)
        return
    if not (inode.is_reg or inode.is_dir):
        raise kerr(errno.EPERM if mask & MAY_WRITE else errno.ENODATA, name)
    if inode.is_dir and inode.mode & S_ISVTX and mask & MAY_WRITE \
            and not is_owner_or_cap(task.cred, inode):
        raise kerr(errno.EPERM, name)
    generic_permission(task.cred, inode, mask)


def getxattr(task: Task, inode: Inode, name: bytes) -> bytes:
    check_name(name)
    xattr_permission(task, inode, name, MAY_READ)
    if name in ACL_NAMES and not inode.sb.posix_acl:
        raise kerr(errno.EOPNOTSUPP, name)
    return inode.getxattr(name)


def listxattr(task: Task, inode: Inode) -> list[bytes]:
    names = inode.listxattr()
    if not task.cred.capable(CAP_SYS_ADMIN):
        names = [n for n in names if not n.startswith(b"trusted.")]
    return names


def setxattr(task: Task, path: Path, name: bytes, value: bytes, flags: int) -> None:
    inode = path.dentry.inode
    assert inode is not None
    if flags & ~(XATTR_CREATE | XATTR_REPLACE):
        raise kerr(errno.EINVAL, name)
    check_name(name)
    if len(value) > XATTR_SIZE_MAX:
        raise kerr(errno.E2BIG, name)
    if path.mnt.readonly:
        raise kerr(errno.EROFS, name)
    xattr_permission(task, inode, name, MAY_WRITE)
    sb = inode.sb
    if name in ACL_NAMES:
        _set_acl(task, inode, name, value, flags)
        return
    with sb.transaction():
        inode.setxattr(name, value, flags)
        inode.ctime_ns = sb.now()
        inode.mark_dirty()


def _set_acl(task: Task, inode: Inode, name: bytes, value: bytes, flags: int) -> None:
    sb = inode.sb
    if not sb.posix_acl or inode.is_lnk:
        raise kerr(errno.EOPNOTSUPP, name)
    if not is_owner_or_cap(task.cred, inode):
        raise kerr(errno.EPERM, name)
    acl = acl_from_xattr(value) if value else []
    if acl:
        acl_valid(acl)
    if name == XATTR_NAME_POSIX_ACL_DEFAULT and not inode.is_dir:
        if acl:
            raise kerr(errno.EACCES, name)
        return
    with sb.transaction():
        attr = SetAttr(ctime_ns=sb.now())
        store = bool(acl)
        if name == XATTR_NAME_POSIX_ACL_ACCESS and acl:
            equiv = acl_equiv_mode(acl)
            mode = inode.mode
            if equiv is not None:
                mode = (mode & ~0o777) | equiv
                store = False
            else:
                for tag, perm, _id in acl:
                    if tag == 0x01:
                        mode = (mode & ~0o700) | perm << 6
                    elif tag == 0x10:
                        mode = (mode & ~0o070) | perm << 3
                    elif tag == 0x20:
                        mode = (mode & ~0o007) | perm
            if not task.cred.in_group(inode.gid) and not task.cred.capable(CAP_FSETID):
                mode &= ~S_ISGID
            attr.mode = mode
        if store:
            inode.setxattr(name, value, flags)
        else:
            try:
                inode.removexattr(name)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
        inode.setattr(attr)
    inode.acl_cache = None


def removexattr(task: Task, path: Path, name: bytes) -> None:
    inode = path.dentry.inode
    assert inode is not None
    check_name(name)
    if path.mnt.readonly:
        raise kerr(errno.EROFS, name)
    xattr_permission(task, inode, name, MAY_WRITE)
    if name in ACL_NAMES:
        if not inode.sb.posix_acl:
            raise kerr(errno.EOPNOTSUPP, name)
        if not is_owner_or_cap(task.cred, inode):
            raise kerr(errno.EPERM, name)
    sb = inode.sb
    with sb.transaction():
        inode.removexattr(name)
        inode.ctime_ns = sb.now()
        inode.mark_dirty()
    if name in ACL_NAMES:
        inode.acl_cache = None
