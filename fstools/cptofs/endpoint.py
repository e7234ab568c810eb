"""The two ends of a copy behind one interface: the host (``os``) and the image (``kernel.sys``).

The copy engine (``copy.py``) speaks only to ``Endpoint``; it never asks which
side is which. Both ends name files the same way: an open directory
descriptor of that end plus one path component, or ``b""`` for the directory
descriptor itself (Linux's AT_EMPTY_PATH). Every call that takes a component
works on that component alone and never follows a symlink in it:

* directories are opened with O_DIRECTORY|O_NOFOLLOW relative to their parent;
* files are created with O_CREAT|O_EXCL|O_NOFOLLOW, so an existing name (a
  symlink planted by anyone) is never opened or written through;
* stat, chown, chmod, utimens and the xattr calls use AT_SYMLINK_NOFOLLOW (on
  the host, xattrs go through ``/proc/self/fd/DIRFD/NAME`` with
  ``follow_symlinks=False``: the directory is the one we hold open, the last
  component is not followed).

Only the user's own paths (the sources and DST on the command line) are
resolved with symlinks followed, by ``open_dir`` and ``stat_path``.

Errors are ``OSError`` with the errno of the end that failed; the engine adds
the full path to its messages.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from typing import Protocol

from kernel import (
    AT_EMPTY_PATH,
    AT_REMOVEDIR,
    AT_SYMLINK_NOFOLLOW,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOFOLLOW,
    O_RDONLY,
    O_WRONLY,
    Syscalls,
)

from ..common.hostfs import DIR_FLAGS, host_xattrs, list_dir, open_read, proc_path
from ..common.regions import data_regions
from ..common.xattrs import read_xattrs
from .readahead import HostStat, Key, ReadAhead, Record

log = logging.getLogger("cptofs")


class StatLike(Protocol):
    """What both ``os.stat_result`` and ``kernel.Stat`` provide."""

    @property
    def st_mode(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_dev(self) -> int: ...
    @property
    def st_nlink(self) -> int: ...
    @property
    def st_uid(self) -> int: ...
    @property
    def st_gid(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_rdev(self) -> int: ...
    @property
    def st_atime_ns(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...


class Endpoint(Protocol):
    """One side of a copy. ``dfd``/``fd`` are descriptors of this side.

    Calls taking ``(dfd, name)`` act on ``name`` inside directory ``dfd``
    without following a symlink there; ``name == b""`` means ``dfd`` itself.
    """

    label: str          # "host" or "image", for messages
    privileged: bool    # may create device nodes and set any owner
    # a file made by create_at gets exactly the mode asked for and no extended attribute
    # but those a default ACL of its directory gives (no umask, no security module)
    exact_create: bool

    # -- the user's paths (symlinks followed) --------------------------------------------------
    def open_dir(self, path: bytes) -> int: ...
    def stat_path(self, path: bytes) -> StatLike | None: ...

    # -- walking ---------------------------------------------------------------------------------
    def begin_walk(self, dfd: int, name: bytes) -> None:
        """The engine is about to walk ``name`` in ``dfd`` (b"": ``dfd`` itself) and all
        below it, in order (each directory's names sorted, a directory's entries right after
        it): a source may read ahead."""
    def end_walk(self) -> None: ...
    def opendir_at(self, dfd: int, name: bytes) -> int: ...
    def lstat_at(self, dfd: int, name: bytes) -> StatLike: ...
    def listdir(self, dfd: int) -> list[bytes]: ...
    def close(self, fd: int) -> None: ...

    # -- reading -------------------------------------------------------------------------------
    def open_read(self, dfd: int, name: bytes) -> int: ...
    def pread(self, fd: int, count: int, offset: int) -> bytes | memoryview: ...
    def data_regions(self, fd: int, size: int) -> Iterator[tuple[int, int]]: ...
    def readlink_at(self, dfd: int, name: bytes) -> bytes: ...
    def xattrs_at(self, dfd: int, name: bytes) -> list[tuple[bytes, bytes]]: ...

    # -- writing -------------------------------------------------------------------------------
    def mkdir_at(self, dfd: int, name: bytes, mode: int) -> None: ...
    def create_at(self, dfd: int, name: bytes, mode: int = 0o600) -> int: ...
    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int: ...
    def ftruncate(self, fd: int, size: int) -> None: ...
    def symlink_at(self, target: bytes, dfd: int, name: bytes) -> None: ...
    def mknod_at(self, dfd: int, name: bytes, mode: int, rdev: int) -> None: ...
    def link_at(self, odfd: int, oname: bytes, dfd: int, name: bytes) -> None: ...
    def unlink_at(self, dfd: int, name: bytes, is_dir: bool) -> None: ...
    def chown_at(self, dfd: int, name: bytes, uid: int, gid: int) -> None: ...
    def chmod_at(self, dfd: int, name: bytes, mode: int) -> None: ...
    def listxattr_at(self, dfd: int, name: bytes) -> list[bytes]: ...
    def setxattr_at(self, dfd: int, name: bytes, xname: bytes, value: bytes) -> None: ...
    def removexattr_at(self, dfd: int, name: bytes, xname: bytes) -> None: ...
    def utimens_at(self, dfd: int, name: bytes, atime_ns: int, mtime_ns: int) -> None: ...
    def finish(self) -> None: ...


def _ns_to_ts(ns: int) -> tuple[int, int]:
    sec, nsec = divmod(ns, 1_000_000_000)
    return sec, nsec


# ---------------------------------------------------------------------------------- host
class HostEndpoint:
    """The host's filesystem through ``os``, relative to directory descriptors."""

    label = "host"
    exact_create = False  # the umask applies, and security modules may label new files

    def __init__(self) -> None:
        self.privileged = os.geteuid() == 0

    def open_dir(self, path: bytes) -> int:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def stat_path(self, path: bytes) -> os.stat_result | None:
        try:
            return os.stat(path)
        except FileNotFoundError:
            return None

    def begin_walk(self, dfd: int, name: bytes) -> None:
        pass

    def end_walk(self) -> None:
        pass

    def opendir_at(self, dfd: int, name: bytes) -> int:
        return os.open(name or b".", DIR_FLAGS, dir_fd=dfd)

    def lstat_at(self, dfd: int, name: bytes) -> os.stat_result:
        if not name:
            return os.fstat(dfd)
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)

    def listdir(self, dfd: int) -> list[bytes]:
        return list_dir(dfd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def open_read(self, dfd: int, name: bytes) -> int:
        return open_read(dfd, name)

    def pread(self, fd: int, count: int, offset: int) -> bytes | memoryview:
        return os.pread(fd, count, offset)

    def data_regions(self, fd: int, size: int) -> Iterator[tuple[int, int]]:
        return data_regions(os.lseek, fd, size)

    def readlink_at(self, dfd: int, name: bytes) -> bytes:
        return os.readlink(name, dir_fd=dfd)

    def xattrs_at(self, dfd: int, name: bytes) -> list[tuple[bytes, bytes]]:
        return host_xattrs(dfd, name)

    def mkdir_at(self, dfd: int, name: bytes, mode: int) -> None:
        os.mkdir(name, mode, dir_fd=dfd)

    def create_at(self, dfd: int, name: bytes, mode: int = 0o600) -> int:
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                       mode, dir_fd=dfd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def symlink_at(self, target: bytes, dfd: int, name: bytes) -> None:
        os.symlink(target, name, dir_fd=dfd)

    def mknod_at(self, dfd: int, name: bytes, mode: int, rdev: int) -> None:
        os.mknod(name, mode, rdev, dir_fd=dfd)

    def link_at(self, odfd: int, oname: bytes, dfd: int, name: bytes) -> None:
        os.link(oname, name, src_dir_fd=odfd, dst_dir_fd=dfd, follow_symlinks=False)

    def unlink_at(self, dfd: int, name: bytes, is_dir: bool) -> None:
        if is_dir:
            os.rmdir(name, dir_fd=dfd)
        else:
            os.unlink(name, dir_fd=dfd)

    def chown_at(self, dfd: int, name: bytes, uid: int, gid: int) -> None:
        if not name:
            os.fchown(dfd, uid, gid)
        else:
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)

    def chmod_at(self, dfd: int, name: bytes, mode: int) -> None:
        if not name:
            os.fchmod(dfd, mode)
        else:
            # glibc's fchmodat(AT_SYMLINK_NOFOLLOW) works on anything but a symlink,
            # which the engine never chmods
            os.chmod(name, mode, dir_fd=dfd, follow_symlinks=False)

    def listxattr_at(self, dfd: int, name: bytes) -> list[bytes]:
        try:
            return [os.fsencode(n) for n in os.listxattr(proc_path(dfd, name),
                                                         follow_symlinks=not name)]
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                return []
            raise

    def setxattr_at(self, dfd: int, name: bytes, xname: bytes, value: bytes) -> None:
        os.setxattr(proc_path(dfd, name), xname, value, 0, follow_symlinks=not name)

    def removexattr_at(self, dfd: int, name: bytes, xname: bytes) -> None:
        os.removexattr(proc_path(dfd, name), xname, follow_symlinks=not name)

    def utimens_at(self, dfd: int, name: bytes, atime_ns: int, mtime_ns: int) -> None:
        if not name:
            os.utime(dfd, ns=(atime_ns, mtime_ns))
        else:
            os.utime(name, ns=(atime_ns, mtime_ns), dir_fd=dfd, follow_symlinks=False)

    def finish(self) -> None:
        pass


class ReadAheadHost(HostEndpoint):
    """The host as a source, answered from a read-ahead helper while the engine walks."""

    def __init__(self) -> None:
        super().__init__()
        self._ahead: ReadAhead | None = None
        self._keys: dict[int, Key] = {}  # directory descriptors of the walk: their keys
        self._files: dict[int, Record] = {}  # stand-in descriptors (< 0): files read ahead
        self._next_fd = -2
        self.answered = 0  # entries the helper answered for (the tests check it works)

    def begin_walk(self, dfd: int, name: bytes) -> None:
        self.end_walk()
        try:
            if not stat.S_ISDIR(super().lstat_at(dfd, name).st_mode):
                return  # nothing to gain
            self._ahead = ReadAhead(dfd, name)
        except OSError as e:
            log.debug("no read-ahead helper: %s", e)
            return
        self._keys = {dfd: ()}

    def end_walk(self) -> None:
        if self._ahead is not None:
            self.answered += self._ahead.answered
            self._ahead.close()
            self._ahead = None
        self._keys.clear()
        self._files.clear()

    def _find(self, dfd: int, name: bytes) -> Record | None:
        if self._ahead is None:
            return None
        prefix = self._keys.get(dfd)
        if prefix is None:
            return None
        if not name:  # only the walk's start is named by its directory alone
            return self._ahead.find((b"",)) if not prefix else None
        return self._ahead.find((*prefix, name))

    def opendir_at(self, dfd: int, name: bytes) -> int:
        fd = super().opendir_at(dfd, name)
        prefix = self._keys.get(dfd)
        if prefix is not None and name != b".." and (name or not prefix):
            self._keys[fd] = (*prefix, name)
        return fd

    def close(self, fd: int) -> None:
        if fd < 0:
            self._files.pop(fd, None)
            return
        self._keys.pop(fd, None)
        super().close(fd)

    def lstat_at(self, dfd: int, name: bytes) -> os.stat_result | HostStat:  # type: ignore[override]
        rec = self._find(dfd, name)
        return rec[1] if rec is not None else super().lstat_at(dfd, name)  # type: ignore[return-value]

    def listdir(self, dfd: int) -> list[bytes]:
        key = self._keys.get(dfd)
        if key and self._ahead is not None:
            rec = self._ahead.find(key)
            if rec is not None and isinstance(rec[3], list) and stat.S_ISDIR(rec[1][0]):
                return list(rec[3])
        return super().listdir(dfd)

    def xattrs_at(self, dfd: int, name: bytes) -> list[tuple[bytes, bytes]]:
        if dfd < 0:
            return list(self._files[dfd][2] or ())
        rec = self._find(dfd, name)
        if rec is not None and rec[2] is not None and not stat.S_ISREG(rec[1][0]):
            return list(rec[2])
        return super().xattrs_at(dfd, name)

    def readlink_at(self, dfd: int, name: bytes) -> bytes:
        rec = self._find(dfd, name)
        if rec is not None and isinstance(rec[3], bytes) and stat.S_ISLNK(rec[1][0]):
            return rec[3]
        return super().readlink_at(dfd, name)

    def open_read(self, dfd: int, name: bytes) -> int:
        rec = self._find(dfd, name)
        if rec is not None and rec[2] is not None and isinstance(rec[3], list) \
                and stat.S_ISREG(rec[1][0]):
            fd = self._next_fd
            self._next_fd -= 1
            self._files[fd] = rec
            return fd
        return super().open_read(dfd, name)

    def data_regions(self, fd: int, size: int) -> Iterator[tuple[int, int]]:
        if fd < 0:
            return iter([(a, min(b, size)) for a, b, _w in self._files[fd][3] if a < size])  # type: ignore[attr-defined]
        return super().data_regions(fd, size)

    def pread(self, fd: int, count: int, offset: int) -> bytes | memoryview:
        if fd < 0:
            rec = self._files[fd]
            for start, stop, where in rec[3]:
                if start <= offset < stop:
                    at = where + offset - start
                    return rec[4][at:at + min(count, stop - offset)]  # type: ignore[no-any-return]
            return b""
        return super().pread(fd, count, offset)


# ---------------------------------------------------------------------------------- image
class ImageEndpoint:
    """A mounted image through ``kernel.sys``, the task chrooted into the mount.

    The chroot makes the image's own absolute names and ``..`` stay inside
    the image, as they would for the system the image belongs to; ``finish``
    leaves it again so the kernel can unmount.
    """

    label = "image"
    privileged = True  # the kernel's initial task is root
    exact_create = True  # umask 0 (below), and the library kernel has no security module

    def __init__(self, sys: Syscalls, mount_root: str) -> None:
        self.sys = sys
        self._outside = sys.open("/", O_RDONLY | O_DIRECTORY)
        sys.chroot(mount_root)
        sys.chdir("/")
        sys.umask(0)

    def finish(self) -> None:
        """Leave the chroot (the kernel's root must be its own again to halt)."""
        if self._outside < 0:
            return
        sys = self.sys
        sys.fchdir(self._outside)
        sys.chroot(".")
        sys.chdir("/")
        sys.close(self._outside)
        self._outside = -1

    def open_dir(self, path: bytes) -> int:
        return self.sys.open(path, O_RDONLY | O_DIRECTORY)

    def stat_path(self, path: bytes) -> StatLike | None:
        try:
            return self.sys.stat(path)
        except FileNotFoundError:
            return None

    def begin_walk(self, dfd: int, name: bytes) -> None:
        pass

    def end_walk(self) -> None:
        pass

    def opendir_at(self, dfd: int, name: bytes) -> int:
        return self.sys.openat(dfd, name or b".", O_RDONLY | O_DIRECTORY | O_NOFOLLOW)

    def lstat_at(self, dfd: int, name: bytes) -> StatLike:
        if not name:
            return self.sys.fstat(dfd)
        return self.sys.fstatat(dfd, name, AT_SYMLINK_NOFOLLOW)

    def listdir(self, dfd: int) -> list[bytes]:
        names: list[bytes] = []
        sys = self.sys
        while True:
            try:
                batch = sys.getdents64(dfd, 1 << 16)
            except OSError as e:
                bad = getattr(e, "dirent_name", None)
                if bad is not None:  # a damaged name: the engine reports it; read on
                    names.append(bad)
                    continue
                raise
            if not batch:
                break
            names.extend(d.d_name for d in batch if d.d_name not in (b".", b".."))
        names.sort()
        return names

    def close(self, fd: int) -> None:
        self.sys.close(fd)

    def open_read(self, dfd: int, name: bytes) -> int:
        return self.sys.openat(dfd, name, O_RDONLY | O_NOFOLLOW)

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        return self.sys.pread64(fd, count, offset)

    def data_regions(self, fd: int, size: int) -> Iterator[tuple[int, int]]:
        return data_regions(self.sys.lseek, fd, size)

    def readlink_at(self, dfd: int, name: bytes) -> bytes:
        return self.sys.readlinkat(dfd, name)

    @staticmethod
    def _flags(name: bytes) -> int:
        return AT_SYMLINK_NOFOLLOW | (0 if name else AT_EMPTY_PATH)

    def xattrs_at(self, dfd: int, name: bytes) -> list[tuple[bytes, bytes]]:
        return read_xattrs(self.sys, dfd, name)

    def mkdir_at(self, dfd: int, name: bytes, mode: int) -> None:
        self.sys.mkdirat(dfd, name, mode)

    def create_at(self, dfd: int, name: bytes, mode: int = 0o600) -> int:
        return self.sys.openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return self.sys.pwrite64(fd, data, offset)

    def ftruncate(self, fd: int, size: int) -> None:
        self.sys.ftruncate(fd, size)

    def symlink_at(self, target: bytes, dfd: int, name: bytes) -> None:
        self.sys.symlinkat(target, dfd, name)

    def mknod_at(self, dfd: int, name: bytes, mode: int, rdev: int) -> None:
        self.sys.mknodat(dfd, name, mode, rdev)

    def link_at(self, odfd: int, oname: bytes, dfd: int, name: bytes) -> None:
        self.sys.linkat(odfd, oname, dfd, name, 0)

    def unlink_at(self, dfd: int, name: bytes, is_dir: bool) -> None:
        self.sys.unlinkat(dfd, name, AT_REMOVEDIR if is_dir else 0)

    def chown_at(self, dfd: int, name: bytes, uid: int, gid: int) -> None:
        self.sys.fchownat(dfd, name, uid, gid, self._flags(name))

    def chmod_at(self, dfd: int, name: bytes, mode: int) -> None:
        self.sys.fchmodat(dfd, name, mode, self._flags(name))

    def listxattr_at(self, dfd: int, name: bytes) -> list[bytes]:
        return self.sys.listxattrat(dfd, name, self._flags(name))

    def setxattr_at(self, dfd: int, name: bytes, xname: bytes, value: bytes) -> None:
        self.sys.setxattrat(dfd, name, self._flags(name), xname, value, 0)

    def removexattr_at(self, dfd: int, name: bytes, xname: bytes) -> None:
        self.sys.removexattrat(dfd, name, self._flags(name), xname)

    def utimens_at(self, dfd: int, name: bytes, atime_ns: int, mtime_ns: int) -> None:
        times = (_ns_to_ts(atime_ns), _ns_to_ts(mtime_ns))
        if not name:
            self.sys.utimensat(dfd, None, times, 0)
        else:
            self.sys.utimensat(dfd, name, times, AT_SYMLINK_NOFOLLOW)


def file_type(mode: int) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
            stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
            stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}.get(stat.S_IFMT(mode), "file")
