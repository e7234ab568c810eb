"""POSIX ACLs: ext4's compact on-disk form <-> the VFS's posix_acl xattr form.

On disk (``system.posix_acl_access``/``_default``, name indexes 2 and 3) an
ACL is a version-1 header followed by entries of 4 bytes (USER_OBJ,
GROUP_OBJ, MASK, OTHER: tag and permissions) or 8 bytes (USER, GROUP: tag,
permissions and id). The VFS format is version 2 with 8-byte entries only.
"""

from __future__ import annotations

import errno
import struct

from ...errors import kerr
from ...uapi import ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ
from ...vfs.cred import acl_from_xattr, acl_to_xattr
from .ondisk import EXT4_ACL_VERSION

ACL_UNDEFINED_ID = 0xFFFFFFFF
_U32 = struct.Struct("<I")
_SHORT = struct.Struct("<HH")
_LONG = struct.Struct("<HHI")


def acl_from_disk(value: bytes, what: str) -> bytes:
    """The VFS xattr form of an on-disk ACL; EUCLEAN naming ``what`` if malformed."""
    if len(value) < 4 or _U32.unpack_from(value)[0] != EXT4_ACL_VERSION:
        raise kerr(errno.EUCLEAN, what, "malformed ACL header")
    acl = []
    pos, end = 4, len(value)
    while pos < end:
        if pos + 4 > end:
            raise kerr(errno.EUCLEAN, what, "truncated ACL entry")
        tag, perm = _SHORT.unpack_from(value, pos)
        if tag in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER):
            acl.append((tag, perm, ACL_UNDEFINED_ID))
            pos += 4
        elif tag in (ACL_USER, ACL_GROUP):
            if pos + 8 > end:
                raise kerr(errno.EUCLEAN, what, "truncated ACL entry")
            acl.append(_LONG.unpack_from(value, pos))
            pos += 8
        else:
            raise kerr(errno.EUCLEAN, what, f"unknown ACL tag {tag:#x}")
    return acl_to_xattr(acl)


def acl_to_disk(value: bytes) -> bytes:
    """The on-disk form of a VFS ACL xattr value (for the write path); EINVAL if malformed."""
    out = [_U32.pack(EXT4_ACL_VERSION)]
    for tag, perm, ident in acl_from_xattr(value):
        if tag in (ACL_USER, ACL_GROUP):
            out.append(_LONG.pack(tag, perm, ident))
        elif tag in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER):
            out.append(_SHORT.pack(tag, perm))
        else:
            raise kerr(errno.EINVAL, None, "invalid ACL tag")
    return b"".join(out)
