"""POSIX ACLs (fs/xfs/xfs_acl.c): XFS's on-disk form to Linux's xattr form.

XFS keeps ACLs as root-namespace attributes SGI_ACL_FILE and SGI_ACL_DEFAULT
holding big-endian {count; {tag, id, perm, pad}[count]}; Linux presents them
as system.posix_acl_access/default in the little-endian
posix_acl_xattr format (version 2, {tag 16, perm 16, id 32} entries, with
ACL_UNDEFINED_ID for entries that carry no id).
"""

from __future__ import annotations

import struct

from ...errors import corrupted
from . import ondisk as od

ACL_USER = 0x02
ACL_GROUP = 0x08
_VALID_TAGS = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
ACL_UNDEFINED_ID = 0xFFFFFFFF
_xattr_entry = struct.Struct("<HHI")


def max_entries(crc: bool) -> int:
    """XFS_ACL_MAX_ENTRIES: 25 on v4, as many as fit in 64 KiB on v5."""
    return (65536 - 4) // 12 if crc else 25


def acl_to_xattr(value: bytes, crc: bool, what: str) -> bytes:
    """Convert an on-disk ACL; EUCLEAN when its count or length is wrong."""
    if len(value) < 4:
        raise corrupted(what, "ACL too short")
    count = od.xfs_acl_hdr.unpack_from(value, 0)[0]
    if count > max_entries(crc) or len(value) != 4 + 12 * count:
        raise corrupted(what, f"ACL of {count} entries in {len(value)} bytes")
    out = bytearray(struct.pack("<I", 2))
    for i in range(count):
        tag, aid, perm, _pad = od.xfs_acl_entry.unpack_from(value, 4 + 12 * i)
        if tag not in _VALID_TAGS:
            raise corrupted(what, f"bad ACL tag {tag:#x}")
        if tag not in (ACL_USER, ACL_GROUP):
            aid = ACL_UNDEFINED_ID
        out += _xattr_entry.pack(tag, perm & 0xFFFF, aid)
    return bytes(out)
