"""Reading a file's extended attributes through kernel.sys, as every tool needs them."""

from __future__ import annotations

import errno
from typing import Any

from kernel import AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW

# XFS keeps ACLs under these names too; the VFS already shows them as system.posix_acl_*
XFS_ACL_NAMES = (b"trusted.SGI_ACL_FILE", b"trusted.SGI_ACL_DEFAULT")


def read_xattrs(sys: Any, dfd: int, name: bytes) -> list[tuple[bytes, bytes]]:
    """Every (name, value) of ``name`` in directory ``dfd`` (the directory itself when
    ``name`` is empty), sorted, never following a symlink; an attribute removed meanwhile
    is left out."""
    flags = AT_SYMLINK_NOFOLLOW | (0 if name else AT_EMPTY_PATH)
    out = []
    for xname in sorted(sys.listxattrat(dfd, name, flags)):
        if xname in XFS_ACL_NAMES:
            continue
        try:
            out.append((xname, sys.getxattrat(dfd, name, flags, xname)))
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
    return out
