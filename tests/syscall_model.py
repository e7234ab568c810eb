"""One set of filesystem operations, run on the host kernel or on ours.

``HostFS`` performs each operation with the host's system calls under a
temporary directory; ``KernelFS`` performs the same one through
``kernel.sys`` under a directory inside the library kernel. Every operation
returns a plain value or ``("err", errno_name)``, so a test can run a
sequence on both and compare results step by step, then compare the trees
(``snapshot``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]

Result = Any


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _err(e: OSError) -> tuple[str, str]:
    return ("err", errno.errorcode.get(e.errno or 0, str(e.errno)))


def _type(mode: int) -> str:
    return stat.filemode(mode)[0]


class _Base:
    """Shared operation logic; subclasses supply the primitive calls."""

    def call(self, name: str, *args: Any) -> Result:
        try:
            return getattr(self, "op_" + name)(*args)
        except OSError as e:
            return _err(e)

    # subclasses: p(rel) -> full path bytes, and the os-like primitives below

    def op_mkdir(self, rel: bytes, mode: int) -> Result:
        self.mkdir(self.p(rel), mode)

    def op_rmdir(self, rel: bytes) -> Result:
        self.rmdir(self.p(rel))

    def op_unlink(self, rel: bytes) -> Result:
        self.unlink(self.p(rel))

    def op_rename(self, a: bytes, b: bytes, flags: int) -> Result:
        self.renameat2(self.p(a), self.p(b), flags)

    def op_link(self, a: bytes, b: bytes) -> Result:
        self.link(self.p(a), self.p(b))

    def op_symlink(self, target: bytes, rel: bytes) -> Result:
        self.symlink(target, self.p(rel))

    def op_readlink(self, rel: bytes) -> Result:
        return self.readlink(self.p(rel))

    def _special(self, rel: bytes, follow: bool = True) -> bool:
        """Is ``rel`` a fifo, socket or device? The model never opens those:
        the host would block on a fifo or open a real device."""
        try:
            st = self.stat(self.p(rel), follow)
        except OSError:
            return False
        return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))

    def op_create(self, rel: bytes, flags: int, mode: int, data: bytes) -> Result:
        if self._special(rel, not flags & os.O_NOFOLLOW):
            return ("special",)
        fd = self.open(self.p(rel), flags, mode)
        try:
            if data and flags & os.O_ACCMODE:
                self.write(fd, data)
            st = self.fstat(fd)
            return (_type(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else None)
        finally:
            self.close(fd)

    def op_read(self, rel: bytes) -> Result:
        if self._special(rel):
            return ("special",)
        fd = self.open(self.p(rel), os.O_RDONLY, 0)
        try:
            return self.read(fd, 1 << 16)
        finally:
            self.close(fd)

    def op_pwrite(self, rel: bytes, data: bytes, offset: int, append: bool) -> Result:
        if self._special(rel):
            return ("special",)
        fd = self.open(self.p(rel), os.O_WRONLY | (os.O_APPEND if append else 0), 0)
        try:
            return self.pwrite(fd, data, offset)
        finally:
            self.close(fd)

    def op_truncate(self, rel: bytes, length: int) -> Result:
        self.truncate(self.p(rel), length)

    def op_chmod(self, rel: bytes, mode: int) -> Result:
        self.chmod(self.p(rel), mode)

    def op_chown(self, rel: bytes, uid: int, gid: int, follow: bool) -> Result:
        self.chown(self.p(rel), uid, gid, follow)

    def op_utimens(self, rel: bytes, times: Any, follow: bool) -> Result:
        self.utimens(self.p(rel), times, follow)

    def op_setxattr(self, rel: bytes, name: bytes, value: bytes, flags: int, follow: bool) -> Result:
        self.setxattr(self.p(rel), name, value, flags, follow)

    def op_getxattr(self, rel: bytes, name: bytes, follow: bool) -> Result:
        return self.getxattr(self.p(rel), name, follow)

    def op_removexattr(self, rel: bytes, name: bytes, follow: bool) -> Result:
        self.removexattr(self.p(rel), name, follow)

    def op_listxattr(self, rel: bytes, follow: bool) -> Result:
        return sorted(n for n in self.listxattr(self.p(rel), follow)
                      if n.startswith((b"user.", b"trusted.")))

    def op_mknod(self, rel: bytes, mode: int, dev: int) -> Result:
        self.mknod(self.p(rel), mode, dev)

    def op_stat(self, rel: bytes, follow: bool) -> Result:
        st = self.stat(self.p(rel), follow)
        size = st.st_size if not stat.S_ISDIR(st.st_mode) else None
        return (st.st_mode, st.st_nlink, st.st_uid, st.st_gid, size)

    def op_access(self, rel: bytes, mode: int) -> Result:
        self.access(self.p(rel), mode)

    def op_opendir(self, rel: bytes, flags: int) -> Result:
        fd = self.open(self.p(rel), flags, 0)
        self.close(fd)

    def op_listdir(self, rel: bytes) -> Result:
        return sorted(self.listdir(self.p(rel)))

    def op_chdir_getcwd(self, rel: bytes) -> Result:
        """chdir then getcwd, reported relative to the base (and back)."""
        self.chdir(self.p(rel))
        try:
            cwd = self.getcwd()
        finally:
            self.chdir(self.p(b"."))
        base = self.p(b".").rstrip(b"/.")
        return cwd[len(base):] or b"/"

    # -- whole-tree view ---------------------------------------------------------
    def snapshot(self) -> dict[bytes, tuple]:
        out: dict[bytes, tuple] = {}
        inos: dict[int, bytes] = {}

        def visit(rel: bytes) -> None:
            full = self.p(rel)
            st = self.stat(full, False)
            t = _type(st.st_mode)
            extra: Any = None
            if t == "-":
                fd = self.open(full, os.O_RDONLY, 0)
                try:
                    extra = self.read(fd, 1 << 20)
                finally:
                    self.close(fd)
            elif t == "l":
                extra = self.readlink(full)
            xattrs = ()
            if t != "l":
                xattrs = tuple(sorted((n, self.getxattr(full, n, False))
                                      for n in self.listxattr(full, False)
                                      if n.startswith((b"user.", b"trusted."))))
            first = inos.setdefault(st.st_ino, rel) if t != "d" else rel
            out[rel] = (st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
                        st.st_size if t != "d" else None, extra, xattrs, first,
                        st.st_rdev if t in "cb" else None)
            if t == "d":
                for name in sorted(self.listdir(full)):
                    visit(name if rel == b"." else rel + b"/" + name)

        visit(b".")
        return out

    def mtimes(self) -> dict[bytes, int]:
        """Every entry's mtime, to see which ones an operation changed."""
        out = {}

        def visit(rel: bytes) -> None:
            full = self.p(rel)
            st = self.stat(full, False)
            out[rel] = st.st_mtime_ns
            if stat.S_ISDIR(st.st_mode):
                for name in self.listdir(full):
                    visit(name if rel == b"." else rel + b"/" + name)

        visit(b".")
        return out

    def reset_mtimes(self) -> None:
        for rel in self.mtimes():
            self.utimens(self.p(rel), ((1000, 0), (1000, 0)), False)


class HostFS(_Base):
    def __init__(self, base: str | bytes) -> None:
        self.base = os.fsencode(base)

    def p(self, rel: bytes) -> bytes:
        return self.base + b"/" + rel

    mkdir = staticmethod(os.mkdir)
    rmdir = staticmethod(os.rmdir)
    unlink = staticmethod(os.unlink)
    link = staticmethod(lambda a, b: os.link(a, b, follow_symlinks=False))
    symlink = staticmethod(os.symlink)
    readlink = staticmethod(os.readlink)
    open = staticmethod(os.open)
    close = staticmethod(os.close)
    write = staticmethod(os.write)
    read = staticmethod(os.read)
    pwrite = staticmethod(os.pwrite)
    fstat = staticmethod(os.fstat)
    truncate = staticmethod(os.truncate)
    chmod = staticmethod(os.chmod)
    mknod = staticmethod(os.mknod)

    @staticmethod
    def access(p: bytes, m: int) -> None:
        if _libc.faccessat(-100, p, m, 0) != 0:
            _raise(ctypes.get_errno())
    chdir = staticmethod(os.chdir)
    getcwd = staticmethod(os.getcwdb)

    @staticmethod
    def renameat2(a: bytes, b: bytes, flags: int) -> None:
        if _libc.renameat2(-100, a, -100, b, flags) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    @staticmethod
    def chown(p: bytes, uid: int, gid: int, follow: bool) -> None:
        os.chown(p, uid, gid, follow_symlinks=follow)

    @staticmethod
    def utimens(p: bytes, times: Any, follow: bool) -> None:
        ts = None
        if times is not None:
            ts = (_Timespec * 2)(_Timespec(*times[0]), _Timespec(*times[1]))
        if _libc.utimensat(-100, p, ts, 0 if follow else 0x100) != 0:
            _raise(ctypes.get_errno())

    @staticmethod
    def setxattr(p: bytes, n: bytes, v: bytes, f: int, follow: bool) -> None:
        os.setxattr(p, n, v, f, follow_symlinks=follow)

    @staticmethod
    def getxattr(p: bytes, n: bytes, follow: bool) -> bytes:
        return os.getxattr(p, n, follow_symlinks=follow)

    @staticmethod
    def removexattr(p: bytes, n: bytes, follow: bool) -> None:
        os.removexattr(p, n, follow_symlinks=follow)

    @staticmethod
    def listxattr(p: bytes, follow: bool) -> list[bytes]:
        return [os.fsencode(n) for n in os.listxattr(p, follow_symlinks=follow)]

    @staticmethod
    def stat(p: bytes, follow: bool) -> os.stat_result:
        return os.stat(p, follow_symlinks=follow)

    @staticmethod
    def listdir(p: bytes) -> list[bytes]:
        return os.listdir(p)


def _raise(code: int) -> None:
    raise OSError(code, os.strerror(code))


class KernelFS(_Base):
    def __init__(self, sys: Any, base: str | bytes) -> None:
        self.sys = sys
        self.base = os.fsencode(base)

    def p(self, rel: bytes) -> bytes:
        return self.base + b"/" + rel

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sys, name)

    def link(self, a: bytes, b: bytes) -> None:
        self.sys.link(a, b)

    def symlink(self, t: bytes, p: bytes) -> None:
        self.sys.symlink(t, p)

    def pwrite(self, fd: int, data: bytes, off: int) -> int:
        return self.sys.pwrite64(fd, data, off)

    def renameat2(self, a: bytes, b: bytes, flags: int) -> None:
        self.sys.renameat2(-100, a, -100, b, flags)

    def chown(self, p: bytes, uid: int, gid: int, follow: bool) -> None:
        self.sys.fchownat(-100, p, uid, gid, 0 if follow else 0x100)

    def utimens(self, p: bytes, times: Any, follow: bool) -> None:
        self.sys.utimensat(-100, p, times, 0 if follow else 0x100)

    def setxattr(self, p: bytes, n: bytes, v: bytes, f: int, follow: bool) -> None:
        (self.sys.setxattr if follow else self.sys.lsetxattr)(p, n, v, f)

    def getxattr(self, p: bytes, n: bytes, follow: bool) -> bytes:
        return (self.sys.getxattr if follow else self.sys.lgetxattr)(p, n)

    def removexattr(self, p: bytes, n: bytes, follow: bool) -> None:
        (self.sys.removexattr if follow else self.sys.lremovexattr)(p, n)

    def listxattr(self, p: bytes, follow: bool) -> list[bytes]:
        return (self.sys.listxattr if follow else self.sys.llistxattr)(p)

    def stat(self, p: bytes, follow: bool) -> Any:
        return self.sys.stat(p) if follow else self.sys.lstat(p)

    def access(self, p: bytes, m: int) -> None:
        self.sys.access(p, m)

    def listdir(self, p: bytes) -> list[bytes]:
        fd = self.sys.open(p, os.O_RDONLY | os.O_DIRECTORY)
        names = []
        try:
            while True:
                batch = self.sys.getdents64(fd)
                if not batch:
                    return names
                names.extend(d.d_name for d in batch if d.d_name not in (b".", b".."))
        finally:
            self.sys.close(fd)

    def getcwd(self) -> bytes:
        return self.sys.getcwd()
