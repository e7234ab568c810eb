"""The system call table: ``kernel.sys.<name>`` with Linux's names and semantics.

Paths are ``bytes`` or ``str`` (encoded with the filesystem encoding, as the
``os`` module does); names the kernel returns (``getdents64``, ``readlink``,
``listxattr``) are ``bytes``. Every error is a ``KernelError``, an ``OSError``
carrying the Linux errno, raised with the path it concerns.

Each call takes the kernel lock for its whole duration: the kernel is one CPU.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from .errors import kerr
from .uapi import (
    AT_EACCESS,
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_NO_AUTOMOUNT,
    AT_REMOVEDIR,
    AT_SYMLINK_FOLLOW,
    AT_SYMLINK_NOFOLLOW,
    FALLOC_FL_COLLAPSE_RANGE,
    FALLOC_FL_INSERT_RANGE,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    MNT_DETACH,
    MS_NOATIME,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_REMOUNT,
    O_ACCMODE,
    O_APPEND,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOATIME,
    O_NOFOLLOW,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_TMPFILE,
    O_TRUNC,
    O_WRONLY,
    R_OK,
    S_IFBLK,
    S_IFMT,
    S_IFREG,
    S_IFSOCK,
    SEEK_CUR,
    SEEK_DATA,
    SEEK_END,
    SEEK_HOLE,
    SEEK_SET,
    UMOUNT_NOFOLLOW,
    W_OK,
    X_OK,
)
from .vfs import attr as vattr
from .vfs import namespace as vns
from .vfs import xattr as vxattr
from .vfs.cred import CAP_FOWNER, CAP_SYS_ADMIN, MAY_EXEC, MAY_READ, MAY_WRITE, generic_permission
from .vfs.dcache import Path
from .vfs.file import FMODE_PATH, FMODE_READ, FMODE_WRITE, File
from .vfs.inode import Inode, SetAttr, StatFs
from .vfs.namei import LAST_NORM, NUL, SLASH, check_path
from .vfs.stat import Stat
from .vfs.super import busy, do_mount, do_remount, do_umount

if TYPE_CHECKING:
    from . import Kernel
    from .vfs.task import Task

PathArg = str | bytes | os.PathLike[Any]
F = TypeVar("F", bound=Callable[..., Any])

ST_RDONLY = 1
ST_NOSUID = 2
ST_NODEV = 4
ST_NOEXEC = 8
ST_NOATIME = 1024
ST_RELATIME = 4096

_RELATIME_SECONDS = 24 * 3600


class Dirent(NamedTuple):
    """One linux_dirent64: ``d_off`` resumes after this entry (lseek or next call)."""

    d_ino: int
    d_off: int
    d_type: int
    d_name: bytes


def _syscall(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: Syscalls, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                return fn(self, *args, **kwargs)
            except OSError as e:
                # ENOSPC while blocks wait for a commit to be free: commit, try once more
                # (a failed call leaves nothing half done)
                if e.errno != errno.ENOSPC or not self._k.reclaim_space():
                    raise
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _enc(path: PathArg) -> bytes:
    return os.fsencode(path)


class Syscalls:
    """System calls of one task (``kernel.sys`` is the initial task's)."""

    def __init__(self, kernel: Kernel, task: Task) -> None:
        self._k = kernel
        self._task = task
        self._lock = kernel.lock

    # ---------------------------------------------------------------- helpers
    def _file(self, fd: int, allow_path: bool = True) -> File:
        f = self._task.files.get(fd)
        if not allow_path and f.fmode & FMODE_PATH:
            raise kerr(errno.EBADF, None, f"fd {fd} is an O_PATH descriptor")
        return f

    def _start(self, dirfd: int, path: bytes) -> Path:
        task = self._task
        if path.startswith(b"/"):
            return task.root
        if dirfd == AT_FDCWD:
            return task.cwd
        f = self._file(dirfd)
        inode = f.path.dentry.inode
        if path and (inode is None or not inode.is_dir):
            raise kerr(errno.ENOTDIR, path)
        return f.path

    def _resolve(self, dirfd: int, path: PathArg | None, follow: bool,
                 empty: bool = False) -> tuple[Path, bytes]:
        """Resolve to an existing inode's path (ENOENT otherwise)."""
        if path is None:
            p = b""
            empty = True
        else:
            p = _enc(path)
        check_path(p, empty_ok=empty)
        if not p:
            if dirfd == AT_FDCWD:
                return self._task.cwd, p
            return self._file(dirfd).path, p
        magic = self._magic_link(p)
        if magic is not None:
            return magic, p
        res = self._task.walker(p).walk(self._start(dirfd, p), p, follow)
        if res.dentry.inode is None:
            raise kerr(errno.ENOENT, p)
        return res, p

    def _magic_link(self, p: bytes) -> Path | None:
        """``/proc/self/fd/N`` names what descriptor N refers to, as Linux's magic
        links do (this is how an O_PATH descriptor is reopened for I/O)."""
        if not p.startswith(b"/proc/self/fd/"):
            return None
        num = p[len(b"/proc/self/fd/"):]
        if not num.isdigit():
            return None
        try:
            f = self._task.files.get(int(num))
        except OSError:
            return None
        return f.path

    def _want_write(self, path: Path, name: bytes | None) -> None:
        if path.mnt.readonly:
            raise kerr(errno.EROFS, name)

    def _touch_atime(self, f: File) -> None:
        """relatime: update atime if older than mtime/ctime or a day old."""
        mnt = f.path.mnt
        if mnt.readonly or mnt.flags & MS_NOATIME or f.flags & O_NOATIME:
            return
        inode = f.inode
        now = inode.sb.now()
        at = inode.atime_ns
        if at <= inode.mtime_ns or at <= inode.ctime_ns or now - at >= _RELATIME_SECONDS * 10**9:
            with inode.sb.transaction():
                inode.setattr(SetAttr(atime_ns=now))

    def _put_inode(self, inode: Inode) -> None:
        inode.i_count -= 1
        if inode.i_count == 0 and inode.nlink == 0:
            with inode.sb.transaction():
                inode.evict()

    # ---------------------------------------------------------------- open/close
    @_syscall
    def open(self, path: PathArg, flags: int = O_RDONLY, mode: int = 0o666) -> int:
        return self.openat(AT_FDCWD, path, flags, mode)

    @_syscall
    def creat(self, path: PathArg, mode: int = 0o666) -> int:
        return self.openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode)

    @_syscall
    def openat(self, dirfd: int, path: PathArg, flags: int = O_RDONLY, mode: int = 0o666) -> int:
        p = _enc(path)
        check_path(p)
        task = self._task
        if flags & O_TMPFILE == O_TMPFILE:
            raise kerr(errno.EOPNOTSUPP, p, "O_TMPFILE")
        if flags & O_PATH:
            res = task.walker(p).walk(self._start(dirfd, p), p, not flags & O_NOFOLLOW)
            inode = res.dentry.inode
            if inode is None:
                raise kerr(errno.ENOENT, p)
            if flags & O_DIRECTORY and not inode.is_dir:
                raise kerr(errno.ENOTDIR, p)
            return task.files.install(File(res, inode, flags & (O_PATH | O_DIRECTORY | O_NOFOLLOW),
                                           FMODE_PATH))
        acc = flags & O_ACCMODE
        created = False
        if flags & O_CREAT:
            res, created = self._open_create(dirfd, p, flags, mode)
        else:
            magic = self._magic_link(p)
            if magic is not None:
                res = magic
            else:
                res = task.walker(p).walk(self._start(dirfd, p), p, not flags & O_NOFOLLOW)
            if res.dentry.inode is None:
                raise kerr(errno.ENOENT, p)
        inode = res.dentry.inode
        assert inode is not None
        if inode.is_lnk:
            raise kerr(errno.ELOOP, p)
        if flags & O_DIRECTORY and not inode.is_dir:
            raise kerr(errno.ENOTDIR, p)
        if inode.is_dir and (acc != O_RDONLY or flags & O_TRUNC or flags & O_CREAT):
            raise kerr(errno.EISDIR, p)
        fmode = 0
        if acc in (O_RDONLY, O_RDWR, 3):
            fmode |= FMODE_READ
        if acc in (O_WRONLY, O_RDWR, 3):
            fmode |= FMODE_WRITE
        if acc == 3:
            fmode = 0
        if not created:
            mask = 0
            if acc in (O_RDONLY, O_RDWR, 3):
                mask |= MAY_READ
            if acc in (O_WRONLY, O_RDWR, 3) or flags & O_TRUNC:
                mask |= MAY_WRITE
            if flags & O_APPEND and mask & MAY_WRITE:
                pass
            ftype = inode.mode & S_IFMT
            if mask & MAY_WRITE and ftype in (S_IFREG, 0o040000, 0o120000):
                self._want_write(res, p)
            if ftype in (0o020000, S_IFBLK) and res.mnt.flags & MS_NODEV:
                raise kerr(errno.EACCES, p)
            generic_permission(task.cred, inode, mask)
            if flags & O_NOATIME and not (task.cred.fsuid == inode.uid
                                          or task.cred.capable(CAP_FOWNER)):
                raise kerr(errno.EPERM, p)
        ftype = inode.mode & S_IFMT
        if ftype == S_IFSOCK:
            raise kerr(errno.ENXIO, p)
        if ftype not in (S_IFREG, 0o040000):
            raise kerr(errno.ENXIO, p, "device and fifo I/O is not available in the library kernel")
        if flags & O_TRUNC and not created and inode.is_reg:
            vattr.truncate(task, inode, 0, p)
        return task.files.install(File(res, inode, flags, fmode))

    def _open_create(self, dirfd: int, p: bytes, flags: int, mode: int) -> tuple[Path, bool]:
        task = self._task
        walker = task.walker(p)
        start = self._start(dirfd, p)
        for _ in range(41):
            par = walker.parent(start, p)
            if par.type != LAST_NORM:  # ".", ".." or "/": an existing directory
                raise kerr(errno.EEXIST if flags & O_EXCL else errno.EISDIR, p)
            if par.trailing:
                raise kerr(errno.EISDIR, p)
            d = walker.lookup_last(par)
            inode = d.inode
            if inode is None:
                self._want_write(par.path, p)
                vns.do_create(task, par, d, S_IFREG | (mode & 0o7777), 0, p)
                return Path(par.path.mnt, d), True
            if flags & O_EXCL:
                raise kerr(errno.EEXIST, p)
            res = walker.step(par.path, par.last) if d.mounted else Path(par.path.mnt, d)
            if not inode.is_lnk:
                return res, False
            if flags & O_NOFOLLOW:
                raise kerr(errno.ELOOP, p)
            # A symlink as the last component: follow it, creating its target
            # if that does not exist (Linux does the same).
            walker.links += 1
            if walker.links > 40:
                raise kerr(errno.ELOOP, p)
            target = inode.readlink()
            if not target:
                raise kerr(errno.ENOENT, p)
            start = task.root if target.startswith(b"/") else par.path
            p = target
        raise kerr(errno.ELOOP, p)

    @_syscall
    def close(self, fd: int) -> None:
        f = self._task.files.remove(fd)
        self._put_inode(f.inode)

    # ---------------------------------------------------------------- read/write
    def _readable(self, fd: int) -> File:
        f = self._file(fd, allow_path=False)
        if not f.fmode & FMODE_READ:
            raise kerr(errno.EBADF, None, f"fd {fd} is not open for reading")
        if f.inode.is_dir:
            raise kerr(errno.EISDIR)
        return f

    @_syscall
    def read(self, fd: int, count: int) -> bytes:
        f = self._readable(fd)
        if count < 0:
            raise kerr(errno.EINVAL)
        data = f.inode.read(f.pos, count) if count else b""
        f.pos += len(data)
        self._touch_atime(f)
        return data

    @_syscall
    def pread64(self, fd: int, count: int, offset: int) -> bytes:
        f = self._readable(fd)
        if count < 0 or offset < 0:
            raise kerr(errno.EINVAL)
        data = f.inode.read(offset, count) if count else b""
        self._touch_atime(f)
        return data

    pread = pread64

    def _read_into(self, f: File, buffers: Sequence[Any], pos: int) -> int:
        total = 0
        for b in buffers:
            view = memoryview(b).cast("B")
            if view.readonly:
                raise kerr(errno.EFAULT, None, "read into a read-only buffer")
            if not len(view):
                continue
            n = f.inode.read_into(pos + total, view)
            total += n
            if n < len(view):
                break  # end of file
        self._touch_atime(f)
        return total

    @_syscall
    def readv(self, fd: int, buffers: Sequence[Any]) -> int:
        """Read into ``buffers`` (writable bytes-like objects) in order; the byte count."""
        f = self._readable(fd)
        n = self._read_into(f, buffers, f.pos)
        f.pos += n
        return n

    @_syscall
    def preadv(self, fd: int, buffers: Sequence[Any], offset: int) -> int:
        """Read into ``buffers`` from ``offset``, without moving the file position."""
        f = self._readable(fd)
        if offset < 0:
            raise kerr(errno.EINVAL)
        return self._read_into(f, buffers, offset)

    def _writable(self, fd: int) -> File:
        f = self._file(fd, allow_path=False)
        if not f.fmode & FMODE_WRITE:
            raise kerr(errno.EBADF, None, f"fd {fd} is not open for writing")
        return f

    def _do_write(self, f: File, data: bytes | bytearray | memoryview, pos: int) -> int:
        inode = f.inode
        sb = inode.sb
        n = len(data)
        if n == 0:
            return 0
        if pos >= sb.maxbytes:
            raise kerr(errno.EFBIG)
        if pos + n > sb.maxbytes:
            data = memoryview(data)[:sb.maxbytes - pos]
        now = sb.now()
        attr = SetAttr(mtime_ns=now, ctime_ns=now)
        mode = vattr.kill_suid_sgid(self._task, inode)
        if mode is not None:
            attr.mode = mode
        with sb.transaction():
            written = inode.write(pos, data)
            inode.setattr(attr)
        if written < len(data) and sb.reclaim():  # short for want of space: commit, go on
            with contextlib.suppress(OSError), sb.transaction():
                written += inode.write(pos + written, memoryview(data)[written:])
        return written

    @_syscall
    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        f = self._writable(fd)
        pos = f.inode.size if f.flags & O_APPEND else f.pos
        n = self._do_write(f, data, pos)
        f.pos = pos + n
        return n

    @_syscall
    def pwrite64(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        f = self._writable(fd)
        if offset < 0:
            raise kerr(errno.EINVAL)
        # Linux: pwrite on an O_APPEND file appends, whatever the offset.
        pos = f.inode.size if f.flags & O_APPEND else offset
        return self._do_write(f, data, pos)

    pwrite = pwrite64

    @_syscall
    def lseek(self, fd: int, offset: int, whence: int) -> int:
        f = self._file(fd, allow_path=False)
        inode = f.inode
        if inode.is_dir:
            if whence == SEEK_SET and offset >= 0:
                f.pos = offset
            elif whence == SEEK_CUR and offset == 0:
                pass
            else:
                raise kerr(errno.EINVAL)
            return f.pos
        size = inode.size
        if whence == SEEK_SET:
            new = offset
        elif whence == SEEK_CUR:
            new = f.pos + offset
        elif whence == SEEK_END:
            new = size + offset
        elif whence in (SEEK_DATA, SEEK_HOLE):
            if offset < 0 or offset >= size:
                raise kerr(errno.ENXIO)
            new = self._seek_data_hole(inode, offset, whence == SEEK_DATA)
        else:
            raise kerr(errno.EINVAL)
        if new < 0:
            raise kerr(errno.EINVAL)
        f.pos = new
        return new

    @staticmethod
    def _seek_data_hole(inode: Inode, offset: int, data: bool) -> int:
        bs = inode.sb.blocksize
        size = inode.size
        start = offset // bs
        end = (size + bs - 1) // bs
        cur = start
        for ext in inode.extents(start, end):
            if ext.lblk > cur:  # a hole before this extent
                if not data:
                    return max(offset, cur * bs)
            if data and not ext.unwritten:
                return max(offset, ext.lblk * bs)
            if ext.unwritten and not data:
                # unwritten extents read as zeros: Linux reports them as holes
                return max(offset, ext.lblk * bs)
            cur = ext.lblk + ext.count
        if data:
            raise kerr(errno.ENXIO)
        return min(size, max(offset, cur * bs))

    # ---------------------------------------------------------------- directories
    @_syscall
    def getdents64(self, fd: int, count: int = 32768) -> list[Dirent]:
        f = self._file(fd, allow_path=False)
        inode = f.inode
        if not inode.is_dir:
            raise kerr(errno.ENOTDIR)
        out: list[Dirent] = []
        used = 0
        if inode.nlink == 0:
            return out
        for name, ino, dtype, off in inode.iterate(f.pos):
            if not name or SLASH in name or NUL in name:
                # verify_dirent_name: a damaged entry (NUL refused too: no C string holds it).
                # The error comes alone, naming the entry; unlike Linux the position moves
                # past it, so the rest of the directory can still be read.
                if out:
                    break
                f.pos = off
                err = kerr(errno.EUCLEAN, name, f"directory inode {inode.ino} holds an invalid name")
                err.dirent_name = name  # type: ignore[attr-defined]  # the next call reads on
                raise err
            reclen = (19 + len(name) + 1 + 7) & ~7
            if used + reclen > count:
                if not out:
                    raise kerr(errno.EINVAL, None, "buffer too small for a directory entry")
                break
            out.append(Dirent(ino, off, dtype, name))
            used += reclen
            f.pos = off
        self._touch_atime(f)
        return out

    @_syscall
    def mkdir(self, path: PathArg, mode: int = 0o777) -> None:
        self.mkdirat(AT_FDCWD, path, mode)

    @_syscall
    def mkdirat(self, dirfd: int, path: PathArg, mode: int = 0o777) -> None:
        p = _enc(path)
        check_path(p)
        vns.mkdirat(self._task, self._start(dirfd, p), p, mode)

    @_syscall
    def mknod(self, path: PathArg, mode: int = 0o600 | S_IFREG, dev: int = 0) -> None:
        self.mknodat(AT_FDCWD, path, mode, dev)

    @_syscall
    def mknodat(self, dirfd: int, path: PathArg, mode: int = 0o600 | S_IFREG, dev: int = 0) -> None:
        p = _enc(path)
        check_path(p)
        vns.mknodat(self._task, self._start(dirfd, p), p, mode, dev)

    @_syscall
    def symlink(self, target: PathArg, linkpath: PathArg) -> None:
        self.symlinkat(target, AT_FDCWD, linkpath)

    @_syscall
    def symlinkat(self, target: PathArg, newdirfd: int, linkpath: PathArg) -> None:
        t, p = _enc(target), _enc(linkpath)
        check_path(t, empty_ok=True)
        check_path(p)
        vns.symlinkat(self._task, t, self._start(newdirfd, p), p)

    @_syscall
    def link(self, oldpath: PathArg, newpath: PathArg) -> None:
        self.linkat(AT_FDCWD, oldpath, AT_FDCWD, newpath, 0)

    @_syscall
    def linkat(self, olddirfd: int, oldpath: PathArg, newdirfd: int, newpath: PathArg,
               flags: int = 0) -> None:
        if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
            raise kerr(errno.EINVAL)
        old, _ = self._resolve(olddirfd, oldpath, bool(flags & AT_SYMLINK_FOLLOW),
                               bool(flags & AT_EMPTY_PATH))
        p = _enc(newpath)
        check_path(p)
        vns.linkat(self._task, old, self._start(newdirfd, p), p)

    @_syscall
    def unlink(self, path: PathArg) -> None:
        self.unlinkat(AT_FDCWD, path, 0)

    @_syscall
    def rmdir(self, path: PathArg) -> None:
        self.unlinkat(AT_FDCWD, path, AT_REMOVEDIR)

    @_syscall
    def unlinkat(self, dirfd: int, path: PathArg, flags: int = 0) -> None:
        if flags & ~AT_REMOVEDIR:
            raise kerr(errno.EINVAL)
        p = _enc(path)
        check_path(p)
        vns.unlinkat(self._task, self._start(dirfd, p), p, bool(flags & AT_REMOVEDIR))

    @_syscall
    def rename(self, oldpath: PathArg, newpath: PathArg) -> None:
        self.renameat2(AT_FDCWD, oldpath, AT_FDCWD, newpath, 0)

    @_syscall
    def renameat(self, olddirfd: int, oldpath: PathArg, newdirfd: int, newpath: PathArg) -> None:
        self.renameat2(olddirfd, oldpath, newdirfd, newpath, 0)

    @_syscall
    def renameat2(self, olddirfd: int, oldpath: PathArg, newdirfd: int, newpath: PathArg,
                  flags: int = 0) -> None:
        o, n = _enc(oldpath), _enc(newpath)
        check_path(o)
        check_path(n)
        vns.renameat2(self._task, self._start(olddirfd, o), o, self._start(newdirfd, n), n, flags)

    @_syscall
    def readlink(self, path: PathArg) -> bytes:
        return self.readlinkat(AT_FDCWD, path)

    @_syscall
    def readlinkat(self, dirfd: int, path: PathArg) -> bytes:
        res, p = self._resolve(dirfd, path, follow=False, empty=True)
        inode = res.dentry.inode
        assert inode is not None
        if not inode.is_lnk:
            raise kerr(errno.EINVAL if p else errno.ENOENT, p)
        return inode.readlink()

    # ---------------------------------------------------------------- stat
    def _stat_flags(self, flags: int, allowed: int) -> None:
        if flags & ~allowed:
            raise kerr(errno.EINVAL)

    @_syscall
    def stat(self, path: PathArg) -> Stat:
        return self.fstatat(AT_FDCWD, path, 0)

    @_syscall
    def lstat(self, path: PathArg) -> Stat:
        return self.fstatat(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW)

    @_syscall
    def fstat(self, fd: int) -> Stat:
        f = self._file(fd)
        return Stat(f.inode)

    @_syscall
    def fstatat(self, dirfd: int, path: PathArg, flags: int = 0) -> Stat:
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT)
        res, _ = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               bool(flags & AT_EMPTY_PATH))
        assert res.dentry.inode is not None
        return Stat(res.dentry.inode)

    newfstatat = fstatat

    @_syscall
    def statx(self, dirfd: int, path: PathArg, flags: int = 0, mask: int = 0xFFF) -> Stat:
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | 0x6000)
        res, _ = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               bool(flags & AT_EMPTY_PATH))
        assert res.dentry.inode is not None
        return Stat(res.dentry.inode, res.mnt)

    @_syscall
    def statfs(self, path: PathArg) -> StatFs:
        res, _ = self._resolve(AT_FDCWD, path, True)
        return self._statfs(res)

    @_syscall
    def fstatfs(self, fd: int) -> StatFs:
        return self._statfs(self._file(fd).path)

    def _statfs(self, path: Path) -> StatFs:
        st = path.mnt.sb.statfs()
        flags = ST_RELATIME
        mflags = path.mnt.flags
        if path.mnt.readonly:
            flags |= ST_RDONLY
        for ms, st_flag in ((MS_NOSUID, ST_NOSUID), (MS_NODEV, ST_NODEV), (MS_NOEXEC, ST_NOEXEC),
                            (MS_NOATIME, ST_NOATIME)):
            if mflags & ms:
                flags |= st_flag
        st.f_flags = flags
        if not st.f_fsid:
            st.f_fsid = path.mnt.sb.dev
        return st

    @_syscall
    def access(self, path: PathArg, mode: int) -> None:
        self.faccessat(AT_FDCWD, path, mode, 0)

    @_syscall
    def faccessat(self, dirfd: int, path: PathArg, mode: int, flags: int = 0) -> None:
        if mode & ~7:
            raise kerr(errno.EINVAL)
        if flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            raise kerr(errno.EINVAL)
        task = self._task
        saved = task.cred
        if not flags & AT_EACCESS:
            c = saved.copy()
            c.fsuid, c.fsgid = c.uid, c.gid
            if c.uid != 0:
                c.euid = c.uid
            task.cred = c
        try:
            res, p = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                                   bool(flags & AT_EMPTY_PATH))
            inode = res.dentry.inode
            assert inode is not None
            if not mode:
                return
            mask = (MAY_READ if mode & R_OK else 0) | (MAY_WRITE if mode & W_OK else 0) | \
                (MAY_EXEC if mode & X_OK else 0)
            if mask & MAY_WRITE and (inode.is_reg or inode.is_dir or inode.is_lnk):
                self._want_write(res, p)
            generic_permission(task.cred, inode, mask)
        finally:
            task.cred = saved

    # ---------------------------------------------------------------- attributes
    @_syscall
    def chmod(self, path: PathArg, mode: int) -> None:
        self.fchmodat(AT_FDCWD, path, mode, 0)

    @_syscall
    def fchmod(self, fd: int, mode: int) -> None:
        f = self._file(fd, allow_path=False)
        vattr.chmod(self._task, f.path, mode, None)

    @_syscall
    def fchmodat(self, dirfd: int, path: PathArg, mode: int, flags: int = 0) -> None:
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
        res, p = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               bool(flags & AT_EMPTY_PATH))
        vattr.chmod(self._task, res, mode, p)

    @_syscall
    def chown(self, path: PathArg, uid: int, gid: int) -> None:
        self.fchownat(AT_FDCWD, path, uid, gid, 0)

    @_syscall
    def lchown(self, path: PathArg, uid: int, gid: int) -> None:
        self.fchownat(AT_FDCWD, path, uid, gid, AT_SYMLINK_NOFOLLOW)

    @_syscall
    def fchown(self, fd: int, uid: int, gid: int) -> None:
        f = self._file(fd, allow_path=False)
        vattr.chown(self._task, f.path, uid, gid, None)

    @_syscall
    def fchownat(self, dirfd: int, path: PathArg, uid: int, gid: int, flags: int = 0) -> None:
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
        res, p = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               bool(flags & AT_EMPTY_PATH))
        vattr.chown(self._task, res, uid, gid, p)

    @_syscall
    def utimensat(self, dirfd: int, path: PathArg | None,
                  times: tuple[tuple[int, int], tuple[int, int]] | None = None,
                  flags: int = 0) -> None:
        """``times`` is ((atime_sec, atime_nsec), (mtime_sec, mtime_nsec)) or None for now.

        A nsec of UTIME_NOW or UTIME_OMIT means what it means to Linux;
        ``path`` None operates on ``dirfd`` itself (futimens).
        """
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
        if not vattr.check_times(times):
            return
        if path is None:
            if dirfd == AT_FDCWD:
                raise kerr(errno.EFAULT)
            f = self._file(dirfd)
            res, p = f.path, b""
        else:
            res, p = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                                   bool(flags & AT_EMPTY_PATH))
        vattr.utimens(self._task, res, times, p or None)

    @_syscall
    def futimens(self, fd: int, times: tuple[tuple[int, int], tuple[int, int]] | None = None) -> None:
        self.utimensat(fd, None, times, 0)

    @_syscall
    def truncate(self, path: PathArg, length: int) -> None:
        if length < 0:
            raise kerr(errno.EINVAL, _enc(path))
        res, p = self._resolve(AT_FDCWD, path, True)
        inode = res.dentry.inode
        assert inode is not None
        if inode.is_dir:
            raise kerr(errno.EISDIR, p)
        if not inode.is_reg:
            raise kerr(errno.EINVAL, p)
        self._want_write(res, p)
        generic_permission(self._task.cred, inode, MAY_WRITE)
        vattr.truncate(self._task, inode, length, p)

    @_syscall
    def ftruncate(self, fd: int, length: int) -> None:
        f = self._file(fd, allow_path=False)
        if length < 0:
            raise kerr(errno.EINVAL)
        if not f.inode.is_reg or not f.fmode & FMODE_WRITE:
            raise kerr(errno.EINVAL)
        if f.flags & O_APPEND:
            raise kerr(errno.EPERM)
        vattr.truncate(self._task, f.inode, length, None)

    @_syscall
    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        f = self._file(fd, allow_path=False)
        known = (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE
                 | FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)
        if offset < 0 or length <= 0 or mode & ~known:
            raise kerr(errno.EINVAL)
        if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            raise kerr(errno.EOPNOTSUPP)
        if not f.fmode & FMODE_WRITE:
            raise kerr(errno.EBADF)
        inode = f.inode
        if inode.is_dir:
            raise kerr(errno.EISDIR)
        if not inode.is_reg:
            raise kerr(errno.ENODEV)
        if offset + length > inode.sb.maxbytes:
            raise kerr(errno.EFBIG)
        sb = inode.sb
        with sb.transaction():
            inode.fallocate(mode, offset, length)
            if mode & ~FALLOC_FL_KEEP_SIZE or inode.size < offset + length:
                now = sb.now()
                inode.setattr(SetAttr(mtime_ns=now, ctime_ns=now))

    @_syscall
    def fsync(self, fd: int) -> None:
        f = self._file(fd, allow_path=False)
        f.inode.fsync(False)

    @_syscall
    def fdatasync(self, fd: int) -> None:
        f = self._file(fd, allow_path=False)
        f.inode.fsync(True)

    @_syscall
    def sync(self) -> None:
        self._k.sync_all()

    @_syscall
    def syncfs(self, fd: int) -> None:
        self._file(fd).path.mnt.sb.sync()

    # ---------------------------------------------------------------- xattrs
    def _xpath(self, path: PathArg, follow: bool) -> tuple[Path, bytes]:
        return self._resolve(AT_FDCWD, path, follow)

    @_syscall
    def getxattr(self, path: PathArg, name: str | bytes) -> bytes:
        res, _ = self._xpath(path, True)
        return vxattr.getxattr(self._task, res.dentry.inode, _enc(name))  # type: ignore[arg-type]

    @_syscall
    def lgetxattr(self, path: PathArg, name: str | bytes) -> bytes:
        res, _ = self._xpath(path, False)
        return vxattr.getxattr(self._task, res.dentry.inode, _enc(name))  # type: ignore[arg-type]

    @_syscall
    def fgetxattr(self, fd: int, name: str | bytes) -> bytes:
        f = self._file(fd, allow_path=False)
        return vxattr.getxattr(self._task, f.inode, _enc(name))

    @_syscall
    def getxattrat(self, dirfd: int, path: PathArg, flags: int, name: str | bytes) -> bytes:
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
        res, _ = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               bool(flags & AT_EMPTY_PATH))
        return vxattr.getxattr(self._task, res.dentry.inode, _enc(name))  # type: ignore[arg-type]

    @_syscall
    def listxattr(self, path: PathArg) -> list[bytes]:
        res, _ = self._xpath(path, True)
        return vxattr.listxattr(self._task, res.dentry.inode)  # type: ignore[arg-type]

    @_syscall
    def llistxattr(self, path: PathArg) -> list[bytes]:
        res, _ = self._xpath(path, False)
        return vxattr.listxattr(self._task, res.dentry.inode)  # type: ignore[arg-type]

    @_syscall
    def flistxattr(self, fd: int) -> list[bytes]:
        f = self._file(fd, allow_path=False)
        return vxattr.listxattr(self._task, f.inode)

    @_syscall
    def listxattrat(self, dirfd: int, path: PathArg, flags: int = 0) -> list[bytes]:
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
        res, _ = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               bool(flags & AT_EMPTY_PATH))
        return vxattr.listxattr(self._task, res.dentry.inode)  # type: ignore[arg-type]

    @_syscall
    def setxattr(self, path: PathArg, name: str | bytes, value: bytes, flags: int = 0) -> None:
        res, _ = self._xpath(path, True)
        vxattr.setxattr(self._task, res, _enc(name), bytes(value), flags)

    @_syscall
    def lsetxattr(self, path: PathArg, name: str | bytes, value: bytes, flags: int = 0) -> None:
        res, _ = self._xpath(path, False)
        vxattr.setxattr(self._task, res, _enc(name), bytes(value), flags)

    @_syscall
    def fsetxattr(self, fd: int, name: str | bytes, value: bytes, flags: int = 0) -> None:
        f = self._file(fd, allow_path=False)
        vxattr.setxattr(self._task, f.path, _enc(name), bytes(value), flags)

    @_syscall
    def setxattrat(self, dirfd: int, path: PathArg, flags: int, name: str | bytes, value: bytes,
                   xflags: int = 0) -> None:
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
        res, _ = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               bool(flags & AT_EMPTY_PATH))
        vxattr.setxattr(self._task, res, _enc(name), bytes(value), xflags)

    @_syscall
    def removexattr(self, path: PathArg, name: str | bytes) -> None:
        res, _ = self._xpath(path, True)
        vxattr.removexattr(self._task, res, _enc(name))

    @_syscall
    def lremovexattr(self, path: PathArg, name: str | bytes) -> None:
        res, _ = self._xpath(path, False)
        vxattr.removexattr(self._task, res, _enc(name))

    @_syscall
    def fremovexattr(self, fd: int, name: str | bytes) -> None:
        f = self._file(fd, allow_path=False)
        vxattr.removexattr(self._task, f.path, _enc(name))

    @_syscall
    def removexattrat(self, dirfd: int, path: PathArg, flags: int, name: str | bytes) -> None:
        self._stat_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
        res, _ = self._resolve(dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               bool(flags & AT_EMPTY_PATH))
        vxattr.removexattr(self._task, res, _enc(name))

    # ---------------------------------------------------------------- cwd, root, umask
    @_syscall
    def chdir(self, path: PathArg) -> None:
        res, p = self._resolve(AT_FDCWD, path, True)
        self._chdir(res, p)

    @_syscall
    def fchdir(self, fd: int) -> None:
        self._chdir(self._file(fd).path, None)

    def _chdir(self, res: Path, p: bytes | None) -> None:
        inode = res.dentry.inode
        assert inode is not None
        if not inode.is_dir:
            raise kerr(errno.ENOTDIR, p)
        generic_permission(self._task.cred, inode, MAY_EXEC)
        self._task.set_cwd(res)

    @_syscall
    def chroot(self, path: PathArg) -> None:
        res, p = self._resolve(AT_FDCWD, path, True)
        inode = res.dentry.inode
        assert inode is not None
        if not inode.is_dir:
            raise kerr(errno.ENOTDIR, p)
        generic_permission(self._task.cred, inode, MAY_EXEC)
        if not self._task.cred.capable(18):  # CAP_SYS_CHROOT
            raise kerr(errno.EPERM, p)
        self._task.set_root(res)

    @_syscall
    def getcwd(self) -> bytes:
        return self._k.path_of(self._task.cwd, self._task.root)

    @_syscall
    def umask(self, mask: int) -> int:
        old = self._task.umask
        self._task.umask = mask & 0o777
        return old

    # ---------------------------------------------------------------- credentials
    @_syscall
    def setfsuid(self, uid: int) -> int:
        c = self._task.cred
        old = c.fsuid
        if uid != -1 and (c.euid == 0 or uid in (c.uid, c.euid, c.fsuid)):
            self._task.cred = c.copy()
            self._task.cred.fsuid = uid
        return old

    @_syscall
    def setfsgid(self, gid: int) -> int:
        c = self._task.cred
        old = c.fsgid
        if gid != -1 and (c.euid == 0 or gid in (c.gid, c.egid, c.fsgid)):
            self._task.cred = c.copy()
            self._task.cred.fsgid = gid
        return old

    @_syscall
    def setgroups(self, groups: list[int]) -> None:
        if self._task.cred.euid != 0:
            raise kerr(errno.EPERM)
        c = self._task.cred.copy()
        c.groups = frozenset(groups)
        self._task.cred = c

    @_syscall
    def getgroups(self) -> list[int]:
        return sorted(self._task.cred.groups)

    @_syscall
    def setresuid(self, ruid: int, euid: int, suid: int = -1) -> None:
        """setresuid(2): without CAP_SETUID each id must be one of the current three."""
        c = self._task.cred
        allowed = (c.uid, c.euid, c.suid)
        if c.euid != 0 and any(x != -1 and x not in allowed for x in (ruid, euid, suid)):
            raise kerr(errno.EPERM)
        n = c.copy()
        if ruid != -1:
            n.uid = ruid
        if euid != -1:
            n.euid = n.fsuid = euid
        if suid != -1:
            n.suid = suid
        self._task.cred = n

    @_syscall
    def setresgid(self, rgid: int, egid: int, sgid: int = -1) -> None:
        c = self._task.cred
        allowed = (c.gid, c.egid, c.sgid)
        if c.euid != 0 and any(x != -1 and x not in allowed for x in (rgid, egid, sgid)):
            raise kerr(errno.EPERM)
        n = c.copy()
        if rgid != -1:
            n.gid = rgid
        if egid != -1:
            n.egid = n.fsgid = egid
        if sgid != -1:
            n.sgid = sgid
        self._task.cred = n

    @_syscall
    def getuid(self) -> int:
        return self._task.cred.uid

    @_syscall
    def getgid(self) -> int:
        return self._task.cred.gid

    @_syscall
    def geteuid(self) -> int:
        return self._task.cred.euid

    @_syscall
    def getegid(self) -> int:
        return self._task.cred.egid

    # ---------------------------------------------------------------- mounts
    @_syscall
    def mount(self, source: PathArg | None, target: PathArg, fstype: str | None, flags: int = 0,
              data: str | bytes | None = None) -> None:
        task = self._task
        if not task.cred.capable(CAP_SYS_ADMIN):
            raise kerr(errno.EPERM)
        opts = (data.decode() if isinstance(data, bytes) else data) or ""
        res, t = self._resolve(AT_FDCWD, target, True)
        if flags & MS_REMOUNT:
            if res.dentry is not res.mnt.root:
                raise kerr(errno.EINVAL, t)
            do_remount(res.mnt, flags, opts)
            return
        inode = res.dentry.inode
        assert inode is not None
        if not inode.is_dir:
            raise kerr(errno.ENOTDIR, t)
        if fstype is None:
            raise kerr(errno.EINVAL, t, "no filesystem type")
        k = self._k
        fs = k.registry.get(fstype)
        if fs is None:
            raise kerr(errno.ENODEV, fstype, "unknown filesystem type")
        bdev = None
        src = os.fsdecode(source) if source is not None else fstype
        if fs.requires_dev:
            if source is None:
                raise kerr(errno.EINVAL, t, "no source device")
            sres, s = self._resolve(AT_FDCWD, source, True)
            sinode = sres.dentry.inode
            assert sinode is not None
            if sinode.mode & S_IFMT != S_IFBLK:
                raise kerr(errno.ENOTBLK, s)
            if sres.mnt.flags & MS_NODEV:
                raise kerr(errno.EACCES, s)
            bdev = k.bdev_by_dev(sinode.rdev)
            if bdev is None:
                raise kerr(errno.ENXIO, s)
        do_mount(k, task.mounts, k.registry, res, src, bdev, fstype, flags, opts)

    @_syscall
    def umount2(self, target: PathArg, flags: int = 0) -> None:
        task = self._task
        if not task.cred.capable(CAP_SYS_ADMIN):
            raise kerr(errno.EPERM)
        res, t = self._resolve(AT_FDCWD, target, not flags & UMOUNT_NOFOLLOW)
        mnt = res.mnt
        if res.dentry is not mnt.root:
            raise kerr(errno.EINVAL, t, "not a mount point")
        in_use = busy(mnt, [f for _fd, f in task.files.files()], [task.cwd, task.root])
        if in_use and flags & MNT_DETACH:
            raise kerr(errno.EBUSY, t, "lazy unmount of a busy mount is not supported")
        do_umount(task.mounts, mnt, flags, in_use)

    @_syscall
    def umount(self, target: PathArg) -> None:
        self.umount2(target, 0)
