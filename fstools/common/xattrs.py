"""Reading a file's extended attributes through kernel.sys, as every tool needs them."""

from __future__ import annotations

import errno
from typing import Any

from kernel import AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW

from .hostfs import XFS_ACL_NAMES


def read_xattrs(sys: Any, dfd: int, name: bytes) -> list[tuple[bytes, bytes]]:
    """Every (name, value) of ``name`` in directory ``dfd`` (the directory itself when
    ``name`` is empty), sorted, never following a symlink; an attribute removed meanwhile
    is left out."""
    flags = AT_SYMLINK_NOFOLLOW | (0 if name else AT_EMPTY_PATH)
    names = None
    if not name:  # the descriptor's own: the f* calls, which resolve no path
        try:
            names = sys.flistxattr(dfd)
        except OSError as e:
            if e.errno != errno.EBADF:  # EBADF: an O_PATH descriptor; the *at calls take it
                raise
    if names is None:
        names = sys.listxattrat(dfd, name, flags)
        get = lambda x: sys.getxattrat(dfd, name, flags, x)  # noqa: E731
    else:
        get = lambda x: sys.fgetxattr(dfd, x)  # noqa: E731
    if not names:
        return []
    out = []
    for xname in sorted(names):
        if xname in XFS_ACL_NAMES:
            continue
        try:
            out.append((xname, get(xname)))
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
    return out
