"""Reading the host's own files: what needs no kernel, so the read-ahead process of
cptofs (``fstools.cptofs.readahead``) starts with the standard library alone."""

from __future__ import annotations

import errno
import os

# XFS keeps ACLs under these names too; the VFS already shows them as system.posix_acl_*
XFS_ACL_NAMES = (b"trusted.SGI_ACL_FILE", b"trusted.SGI_ACL_DEFAULT")


def proc_path(dfd: int, name: bytes) -> bytes | int:
    """What the host's path-based xattr calls take for ``name`` in directory ``dfd``
    (``dfd`` itself when ``name`` is empty): /proc/self/fd/DFD is the directory we hold
    open, and the last component is not followed (the calls get follow_symlinks=False)."""
    return dfd if not name else b"/proc/self/fd/%d/%s" % (dfd, name)


def host_xattrs(dfd: int, name: bytes) -> list[tuple[bytes, bytes]]:
    """Every (name, value) of host file ``name`` in directory ``dfd`` (the descriptor's
    own when ``name`` is empty), sorted, never following a symlink; none where the host
    filesystem keeps none; an attribute removed meanwhile is left out."""
    where = proc_path(dfd, name)
    follow = not name
    try:
        names = os.listxattr(where, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return []
        raise
    out = []
    for xname in sorted(os.fsencode(n) for n in names):
        if xname in XFS_ACL_NAMES:
            continue
        try:
            out.append((xname, os.getxattr(where, xname, follow_symlinks=follow)))
        except OSError as e:
            if e.errno != errno.ENODATA:  # removed meanwhile
                raise
    return out


_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_read(dfd: int, name: bytes) -> int:
    """Open regular file ``name`` in ``dfd`` to read it: never through a symlink, never
    waiting (a fifo put in its place), and leaving its atime alone where we may (the
    owner or root)."""
    try:
        return os.open(name, _READ | os.O_NOATIME, dir_fd=dfd)
    except PermissionError:
        return os.open(name, _READ, dir_fd=dfd)


def list_dir(dfd: int) -> list[bytes]:
    """The names in directory ``dfd``, sorted as the copy engine walks them."""
    return sorted(os.fsencode(n) for n in os.listdir(dfd))
