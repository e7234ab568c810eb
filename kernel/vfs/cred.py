"""Credentials and Linux's permission checks (fs/namei.c, fs/attr.c, fs/posix_acl.c).

A task's filesystem identity is its fsuid/fsgid and supplementary groups.
Capabilities follow Linux's rule for root: a task with euid 0 holds every
capability, but the filesystem capabilities (CAP_CHOWN, CAP_DAC_OVERRIDE,
CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID) are dropped while its fsuid is
not 0, exactly as setfsuid() does.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import kerr
from ..uapi import (
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_OTHER,
    ACL_USER,
    ACL_USER_OBJ,
    POSIX_ACL_XATTR_VERSION,
    S_IFDIR,
    S_IFMT,
    S_ISGID,
    XATTR_NAME_POSIX_ACL_ACCESS,
    XATTR_NAME_POSIX_ACL_DEFAULT,
)

if TYPE_CHECKING:
    from .inode import Inode

MAY_EXEC = 1
MAY_WRITE = 2
MAY_READ = 4
MAY_APPEND = 8
MAY_ACCESS = 16
MAY_OPEN = 32
MAY_CHDIR = 64
MAY_NOT_BLOCK = 128

CAP_CHOWN = 0
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_FOWNER = 3
CAP_FSETID = 4
CAP_MKNOD = 27
CAP_SYS_ADMIN = 21
CAP_LINUX_IMMUTABLE = 9
_FS_CAPS = {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID,
            CAP_LINUX_IMMUTABLE, CAP_MKNOD}


@dataclass
class Cred:
    uid: int = 0
    gid: int = 0
    euid: int = 0
    egid: int = 0
    fsuid: int = 0
    fsgid: int = 0
    groups: frozenset[int] = field(default_factory=frozenset)
    suid: int = 0
    sgid: int = 0

    def capable(self, cap: int) -> bool:
        if self.euid != 0:
            return False
        if cap in _FS_CAPS:
            return self.fsuid == 0
        return True

    def in_group(self, gid: int) -> bool:
        return gid == self.fsgid or gid in self.groups

    def copy(self) -> Cred:
        return Cred(self.uid, self.gid, self.euid, self.egid, self.fsuid, self.fsgid, self.groups,
                    self.suid, self.sgid)


# -- POSIX ACLs ------------------------------------------------------------------------------
_ACL_HDR = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")

Acl = list[tuple[int, int, int]]  # (tag, perm, id)


def acl_from_xattr(value: bytes) -> Acl:
    """Parse the user-space ACL xattr format; EINVAL if malformed."""
    if len(value) < 4 or (len(value) - 4) % 8:
        raise kerr(errno.EINVAL, None, "malformed POSIX ACL")
    if _ACL_HDR.unpack_from(value)[0] != POSIX_ACL_XATTR_VERSION:
        raise kerr(errno.EOPNOTSUPP, None, "unknown POSIX ACL version")
    return [_ACL_ENTRY.unpack_from(value, off) for off in range(4, len(value), 8)]


def acl_to_xattr(acl: Acl) -> bytes:
    return _ACL_HDR.pack(POSIX_ACL_XATTR_VERSION) + b"".join(_ACL_ENTRY.pack(*e) for e in acl)


def acl_valid(acl: Acl) -> None:
    """Linux's posix_acl_valid: one of each *_OBJ and OTHER, MASK iff named entries."""
    seen: dict[int, int] = {}
    ids: dict[int, set[int]] = {ACL_USER: set(), ACL_GROUP: set()}
    for tag, perm, ident in acl:
        if perm & ~7:
            raise kerr(errno.EINVAL, None, "invalid ACL permission")
        if tag in (ACL_USER, ACL_GROUP):
            if ident in ids[tag]:
                raise kerr(errno.EINVAL, None, "duplicate ACL entry")
            ids[tag].add(ident)
        elif tag in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER):
            if tag in seen:
                raise kerr(errno.EINVAL, None, "duplicate ACL entry")
        else:
            raise kerr(errno.EINVAL, None, "invalid ACL tag")
        seen[tag] = seen.get(tag, 0) + 1
    named = ids[ACL_USER] or ids[ACL_GROUP]
    if not all(t in seen for t in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER)):
        raise kerr(errno.EINVAL, None, "incomplete ACL")
    if named and ACL_MASK not in seen:
        raise kerr(errno.EINVAL, None, "ACL with named entries needs a mask")


def acl_equiv_mode(acl: Acl) -> int | None:
    """The mode bits an ACL amounts to, or None if it has extended entries."""
    mode = 0
    for tag, perm, _id in acl:
        if tag == ACL_USER_OBJ:
            mode |= perm << 6
        elif tag == ACL_GROUP_OBJ:
            mode |= perm << 3
        elif tag == ACL_OTHER:
            mode |= perm
        elif tag == ACL_MASK:
            mode = (mode & ~0o070) | (perm << 3)
            return None if len(acl) > 3 else mode
        else:
            return None
    return mode


def acl_sort(acl: Acl) -> Acl:
    return sorted(acl, key=lambda e: (e[0], e[2] if e[0] in (ACL_USER, ACL_GROUP) else 0))


def acl_chmod(acl: Acl, mode: int) -> Acl:
    """Linux's __posix_acl_chmod: mode bits into USER_OBJ, MASK (or GROUP_OBJ), OTHER."""
    has_mask = any(t == ACL_MASK for t, _p, _i in acl)
    out = []
    for tag, perm, ident in acl:
        if tag == ACL_USER_OBJ:
            perm = (mode >> 6) & 7
        elif tag == ACL_MASK or (tag == ACL_GROUP_OBJ and not has_mask):
            perm = (mode >> 3) & 7
        elif tag == ACL_OTHER:
            perm = mode & 7
        out.append((tag, perm, ident))
    return out


def acl_create_masq(acl: Acl, mode: int) -> tuple[Acl, int]:
    """Linux's posix_acl_create_masq: apply a new inode's mode to the inherited ACL."""
    out = []
    has_mask = any(t == ACL_MASK for t, _p, _i in acl)
    m = mode
    for tag, perm, ident in acl:
        if tag == ACL_USER_OBJ:
            perm &= (m >> 6) | ~7
            m &= (perm << 6) | ~0o700
        elif tag == ACL_OTHER:
            perm &= m | ~7
            m &= perm | ~0o007
        elif tag == ACL_MASK:
            perm &= (m >> 3) | ~7
            m &= (perm << 3) | ~0o070
        elif tag == ACL_GROUP_OBJ and not has_mask:
            perm &= (m >> 3) | ~7
            m &= (perm << 3) | ~0o070
        out.append((tag, perm & 7, ident))
    return out, m


def get_acl(inode: Inode, name: bytes = XATTR_NAME_POSIX_ACL_ACCESS) -> Acl | None:
    """The inode's ACL (cached on the inode; the xattr paths invalidate it)."""
    cache = inode.acl_cache
    if cache is None:
        cache = inode.acl_cache = {}
    if name in cache:
        return cache[name]  # type: ignore[return-value]
    try:
        acl: Acl | None = acl_from_xattr(inode.getxattr(name))
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        acl = None
    cache[name] = acl
    return acl


def _acl_permission(cred: Cred, inode: Inode, acl: Acl, want: int) -> bool:
    found = False
    mask_perm = 7
    for tag, perm, _i in acl:
        if tag == ACL_MASK:
            mask_perm = perm
    for tag, perm, ident in acl:
        if tag == ACL_USER_OBJ:
            if cred.fsuid == inode.uid:
                return perm & want == want
        elif tag == ACL_USER:
            if cred.fsuid == ident:
                return perm & mask_perm & want == want
        elif tag == ACL_GROUP_OBJ:
            if cred.in_group(inode.gid):
                found = True
                if perm & mask_perm & want == want:
                    return True
        elif tag == ACL_GROUP:
            if cred.in_group(ident):
                found = True
                if perm & mask_perm & want == want:
                    return True
        elif tag == ACL_OTHER:
            if found:
                return False
            return perm & want == want
    return False


def _acl_permission_check(cred: Cred, inode: Inode, want: int) -> bool:
    """Linux's acl_permission_check: owner bits, then the ACL, then group/other bits."""
    mode = inode.mode
    if cred.fsuid == inode.uid:
        mode >>= 6
    else:
        if mode & 0o070 and inode.sb.posix_acl:
            acl = get_acl(inode)
            if acl is not None:
                return _acl_permission(cred, inode, acl, want)
        if cred.in_group(inode.gid):
            mode >>= 3
    return want & ~mode & 7 == 0


def generic_permission(cred: Cred, inode: Inode, mask: int) -> None:
    """Linux's generic_permission: EACCES unless the mode, ACL or capabilities allow."""
    want = mask & (MAY_READ | MAY_WRITE | MAY_EXEC)
    if cred.fsuid == 0 and cred.euid == 0:
        # root with every capability: the outcome of the checks below, quickly
        if not want & MAY_EXEC or inode.mode & S_IFMT == S_IFDIR or inode.mode & 0o111:
            return
    if _acl_permission_check(cred, inode, want):
        return
    # Not allowed by the bits; capabilities may override.
    mode = inode.mode
    is_dir = mode & S_IFMT == S_IFDIR
    if is_dir:
        if not want & MAY_WRITE and cred.capable(CAP_DAC_READ_SEARCH):
            return
        if cred.capable(CAP_DAC_OVERRIDE):
            return
        raise kerr(errno.EACCES)
    if cred.capable(CAP_DAC_OVERRIDE) and (not want & MAY_EXEC or mode & 0o111):
        return
    if want == MAY_READ and cred.capable(CAP_DAC_READ_SEARCH):
        return
    raise kerr(errno.EACCES)


def is_owner_or_cap(cred: Cred, inode: Inode) -> bool:
    """inode_owner_or_capable: the fsuid owns it, or CAP_FOWNER."""
    return cred.fsuid == inode.uid or cred.capable(CAP_FOWNER)


def strip_sgid_on_create(cred: Cred, dir_inode: Inode, mode: int, gid: int) -> int:
    """Linux's mode_strip_sgid: a non-directory created in a setgid directory
    keeps S_ISGID only if group-executable and the creator is in the group or
    has CAP_FSETID."""
    if (mode & (S_ISGID | 0o010)) == (S_ISGID | 0o010) and mode & S_IFMT != S_IFDIR \
            and dir_inode.mode & S_ISGID and not cred.in_group(gid) and not cred.capable(CAP_FSETID):
        return mode & ~S_ISGID
    return mode


XATTR_ACL_NAMES = (XATTR_NAME_POSIX_ACL_ACCESS, XATTR_NAME_POSIX_ACL_DEFAULT)
