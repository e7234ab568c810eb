"""The FUSE operations: each request becomes system calls of the library kernel.

Invariants (pyfuse3's low-level contract, kept exactly):

* A FUSE inode is an ``O_PATH`` descriptor in the kernel on the image's inode,
  plus a lookup count. ``lookup``, ``create``, ``mkdir``, ``mknod``,
  ``symlink``, ``link`` and every entry ``readdir_reply`` accepts add one;
  ``forget`` takes them away and closes the descriptor at zero; the root
  (FUSE inode 1) is never forgotten.
* FUSE inode numbers are the image's own inode numbers (the root excepted),
  so ``ls -i`` shows what debugfs or xfs_db show; inodes of another st_dev
  (btrfs subvolumes) get numbers from a separate range. The table is keyed
  by (st_dev, st_ino), so hard links are one FUSE inode.
* Every request runs with the caller's credentials (fsuid, fsgid and
  supplementary groups) set in the kernel first, so what a user creates is
  theirs and the kernel's permission checks are Linux's.
* Kernel errors (OSError with an errno) become ``FUSEError(errno)`` at one
  boundary, ``_errors``; any other exception is a bug: it is logged with its
  traceback and the request fails with EIO, so the mount never hangs.
* ``flush`` is not implemented: its ENOSYS makes the host kernel stop sending
  FLUSH, one round trip less per close(2). Nothing waits for it: writes reach
  the kernel as they come and ``release`` closes the kernel's descriptor.
* A lookup of a missing name answers inode 0 with the entry timeout: the host
  keeps the negative entry, as it keeps positive ones, for as long (every
  change comes through this mount, so the host's cache cannot go stale).
* On a read-only mount, opening a small regular file (up to ``PREFILL``
  bytes) for reading stores its whole content in the host's page cache
  (``notify_store``) before the open returns, once per inode while the host
  holds it: the reads that follow are served by the host kernel without a
  READ round trip. Nothing can change the file, so the cache stays right
  (``keep_cache``).

The kernel is synchronous and has one lock: handlers call it inline (a call
is tens of microseconds; a hop to a worker thread would cost more than most
calls) and never await in between, so each request's calls run as a unit.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pyfuse3

import kernel
from kernel import (
    AT_EACCESS,
    AT_EMPTY_PATH,
    AT_REMOVEDIR,
    AT_SYMLINK_NOFOLLOW,
    O_DIRECTORY,
    O_NOFOLLOW,
    O_PATH,
    O_RDONLY,
    SEEK_SET,
    UTIME_OMIT,
)

log = logging.getLogger("lklfuse")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
OTHER_DEV_BASE = 1 << 56  # FUSE inode numbers for inodes of another st_dev
TIMEOUT = 300.0  # every change goes through us, so the host's caches stay right
PREFILL = 128 << 10  # read-only mounts: small files go to the host's page cache at open


class Node:
    __slots__ = ("fd", "key", "lookups", "stored")

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        self.fd = fd
        self.key = key
        self.lookups = 0
        self.stored = False  # its data went to the host's page cache (read-only mounts)


def _errors(fn: F) -> F:
    """The one boundary where kernel errors become FUSE errors."""

    @functools.wraps(fn)
    async def wrapper(self: KernelOps, *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("lklfuse: internal error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def sup_groups(pid: int) -> tuple[int, ...]:
    """The supplementary groups of process ``pid`` (the "Groups:" line of its
    /proc/PID/status), () when it is gone. Read for every request of a user other than
    root: one read of the file, half what pyfuse3.get_sup_groups costs (its line-by-line
    text reading and set)."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
    except OSError:
        return ()
    try:
        data = os.read(fd, 16384)
    except OSError:
        return ()
    finally:
        os.close(fd)
    i = data.find(b"\nGroups:")
    if i < 0:
        return ()
    j = data.find(b"\n", i + 8)
    try:
        return tuple(int(g) for g in data[i + 8:j if j >= 0 else len(data)].split())
    except ValueError:
        return ()


class KernelOps(pyfuse3.Operations):
    """FUSE requests served by ``sys`` (a ``kernel.sys``) for the tree at ``root``."""

    enable_writeback_cache = False

    def __init__(self, sys: kernel.Syscalls, root: str, readonly: bool,
                 uid: int | None = None, gid: int | None = None) -> None:
        super().__init__()
        self.sys = sys
        self.readonly = readonly
        self.force_uid = uid
        self.force_gid = gid
        sys.umask(0)  # the host kernel has applied the caller's umask already
        fd = sys.open(root, O_PATH | O_DIRECTORY)
        st = sys.fstat(fd)
        self.root_key = (st.st_dev, st.st_ino)
        self.root_dev = st.st_dev
        self.nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: Node(fd, self.root_key)}
        self.by_key: dict[tuple[int, int], int] = {self.root_key: pyfuse3.ROOT_INODE}
        self._other: dict[tuple[int, int], int] = {}
        self._next_other = OTHER_DEV_BASE
        self._cred: tuple[int, int, tuple[int, ...]] = (0, 0, ())
        self._rbuf = bytearray(1 << 20)

    # -- helpers ---------------------------------------------------------------------
    def _as(self, ctx: pyfuse3.RequestContext | None) -> None:
        """Run the next calls with the requesting process's credentials."""
        if ctx is None:
            want: tuple[int, int, tuple[int, ...]] = (0, 0, ())
        else:
            groups: tuple[int, ...] = ()
            if ctx.uid != 0:
                groups = sup_groups(ctx.pid)
            want = (ctx.uid, ctx.gid, groups)
        if want == self._cred:
            return
        s = self.sys
        s.setfsuid(0)
        s.setgroups(list(want[2]))
        s.setfsgid(want[1])
        s.setfsuid(want[0])
        self._cred = want

    def fd(self, inode: int) -> int:
        node = self.nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node.fd

    def _fuse_ino(self, key: tuple[int, int]) -> int:
        if key == self.root_key:
            return pyfuse3.ROOT_INODE
        dev, ino = key
        if dev == self.root_dev and 1 < ino < OTHER_DEV_BASE:
            return ino
        n = self._other.get(key)
        if n is None:
            n = self._other[key] = self._next_other
            self._next_other += 1
        return n

    def attrs(self, st: kernel.Stat) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._fuse_ino((st.st_dev, st.st_ino))
        a.generation = st.st_gen
        a.entry_timeout = TIMEOUT
        a.attr_timeout = TIMEOUT
        a.st_mode = st.st_mode
        a.st_nlink = st.st_nlink
        a.st_uid = st.st_uid if self.force_uid is None else self.force_uid
        a.st_gid = st.st_gid if self.force_gid is None else self.force_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        if st.st_birthtime_ns is not None:
            a.st_birthtime_ns = st.st_birthtime_ns
        return a

    def _open_stat(self, dirfd: int, name: bytes) -> tuple[int, kernel.Stat]:
        """An O_PATH descriptor on ``dirfd/name`` and its attributes: one path walk."""
        s = self.sys
        fd = s.openat(dirfd, name, O_PATH | O_NOFOLLOW)
        try:
            return fd, s.fstat(fd)
        except BaseException:
            s.close(fd)
            raise

    def _remember(self, dirfd: int, name: bytes) -> pyfuse3.EntryAttributes:
        """Count one lookup of ``dirfd/name`` and return its attributes."""
        fd, st = self._open_stat(dirfd, name)
        self._adopt(fd, st)
        return self.attrs(st)

    def _adopt(self, fd: int, st: kernel.Stat) -> None:
        """Count one lookup of the inode ``fd`` (an O_PATH descriptor) refers to; the node
        keeps ``fd``, or it is closed when the node already has one."""
        key = (st.st_dev, st.st_ino)
        ino = self.by_key.get(key)
        if ino is None:
            ino = self._fuse_ino(key)
            self.nodes[ino] = Node(fd, key)
            self.by_key[key] = ino
        else:
            self.sys.close(fd)
        self.nodes[ino].lookups += 1

    def _stat(self, inode: int) -> kernel.Stat:
        return self.sys.fstatat(self.fd(inode), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)

    def _proc(self, inode: int) -> str:
        return f"/proc/self/fd/{self.fd(inode)}"

    # -- lookups and attributes ----------------------------------------------------------
    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> pyfuse3.EntryAttributes:
        self._as(ctx)
        if name in (b".", b".."):
            st = self.sys.fstatat(self.fd(parent_inode), name, 0)
            return self.attrs(st)
        try:
            return self._remember(self.fd(parent_inode), name)
        except FileNotFoundError:
            # a negative entry the host caches: asking again (a search of PATH, a build's
            # look for files it has not made yet, open with O_CREAT after a stat) costs no
            # round trip; every change comes through us, so the host drops it when the
            # name appears (O_EXCL and rename targets always ask again)
            a = pyfuse3.EntryAttributes()
            a.st_ino = 0
            a.entry_timeout = TIMEOUT
            return a

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            node = self.nodes.get(inode)
            if node is None or inode == pyfuse3.ROOT_INODE:
                continue
            node.lookups -= count
            if node.lookups <= 0:
                del self.nodes[inode]
                self.by_key.pop(node.key, None)
                try:
                    self.sys.close(node.fd)
                except OSError:
                    pass

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attrs(self._stat(inode))

    @_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._as(ctx)
        s, fd = self.sys, self.fd(inode)
        if fields.update_size:
            if fh is not None:
                s.ftruncate(fh, attr.st_size)
            else:
                s.truncate(self._proc(inode), attr.st_size)
        if fields.update_mode:
            s.fchmodat(fd, "", attr.st_mode & 0o7777, AT_EMPTY_PATH)
        if fields.update_uid or fields.update_gid:
            s.fchownat(fd, "", attr.st_uid if fields.update_uid else -1,
                       attr.st_gid if fields.update_gid else -1,
                       AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
        if fields.update_atime or fields.update_mtime:
            at = divmod(attr.st_atime_ns, 10**9) if fields.update_atime else (0, UTIME_OMIT)
            mt = divmod(attr.st_mtime_ns, 10**9) if fields.update_mtime else (0, UTIME_OMIT)
            s.utimensat(fd, "", (at, mt), AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
        return self.attrs(self._stat(inode))

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.sys.readlinkat(self.fd(inode), "")

    @_errors
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        self._as(ctx)
        try:
            self.sys.faccessat(self.fd(inode), "", mode, AT_EMPTY_PATH | AT_EACCESS)
        except PermissionError:
            return False
        return True

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = self.sys.fstatfs(self.fd(pyfuse3.ROOT_INODE))
        d = pyfuse3.StatvfsData()
        d.f_bsize = st.f_bsize
        d.f_frsize = st.f_frsize
        d.f_blocks = st.f_blocks
        d.f_bfree = st.f_bfree
        d.f_bavail = st.f_bavail
        d.f_files = st.f_files
        d.f_ffree = st.f_ffree
        d.f_favail = st.f_ffree
        d.f_namemax = st.f_namelen
        return d

    # -- directories ----------------------------------------------------------------------
    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._as(ctx)
        return self.sys.openat(self.fd(inode), ".", O_RDONLY | O_DIRECTORY)

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        s = self.sys
        s.lseek(fh, start_id, SEEK_SET)
        while True:
            batch = s.getdents64(fh, 1 << 16)
            if not batch:
                return
            for d in batch:
                if d.d_name in (b".", b".."):
                    continue
                try:
                    fd, st = self._open_stat(fh, d.d_name)
                except FileNotFoundError:
                    continue  # removed since the directory was read
                try:
                    accepted = pyfuse3.readdir_reply(token, d.d_name, self.attrs(st), d.d_off)
                except BaseException:
                    s.close(fd)
                    raise
                if not accepted:
                    s.close(fd)
                    return
                self._adopt(fd, st)

    @_errors
    async def releasedir(self, fh: int) -> None:
        self.sys.close(fh)

    @_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.sys.fsync(fh)

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._as(ctx)
        pfd = self.fd(parent_inode)
        self.sys.mkdirat(pfd, name, mode)
        return self._remember(pfd, name)

    @_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._as(ctx)
        pfd = self.fd(parent_inode)
        self.sys.mknodat(pfd, name, mode, rdev)
        return self._remember(pfd, name)

    @_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._as(ctx)
        pfd = self.fd(parent_inode)
        self.sys.symlinkat(target, pfd, name)
        return self._remember(pfd, name)

    @_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._as(ctx)
        pfd = self.fd(new_parent_inode)
        self.sys.linkat(self.fd(inode), "", pfd, new_name, AT_EMPTY_PATH)
        return self._remember(pfd, new_name)

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._as(ctx)
        self.sys.unlinkat(self.fd(parent_inode), name, 0)

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._as(ctx)
        self.sys.unlinkat(self.fd(parent_inode), name, AT_REMOVEDIR)

    @_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._as(ctx)
        self.sys.renameat2(self.fd(parent_inode_old), name_old, self.fd(parent_inode_new),
                           name_new, flags)

    # -- files ---------------------------------------------------------------------------------
    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self._as(ctx)
        fh = self.sys.open(self._proc(inode), flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY))
        if self.readonly and flags & os.O_ACCMODE == os.O_RDONLY:
            node = self.nodes[inode]
            if not node.stored:
                try:
                    self._prefill(inode, fh)
                except BaseException:
                    self.sys.close(fh)
                    raise
                node.stored = True
        return pyfuse3.FileInfo(fh=fh, keep_cache=self.readonly)

    def _prefill(self, inode: int, fh: int) -> None:
        """Store a small file's content in the host's page cache (see the invariants)."""
        size = self.sys.fstat(fh).st_size
        if 0 < size <= PREFILL:
            data = self.sys.pread64(fh, size, 0)
            if len(data) == size:
                try:
                    pyfuse3.notify_store(inode, 0, data)
                except OSError as e:  # the host cannot take it: READ requests will come
                    log.debug("notify_store of inode %d: %s", inode, e)

    @_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._as(ctx)
        pfd = self.fd(parent_inode)
        fh = self.sys.openat(pfd, name, flags | os.O_CREAT | O_NOFOLLOW, mode)
        try:
            attrs = self._remember(pfd, name)
        except BaseException:
            self.sys.close(fh)
            raise
        return pyfuse3.FileInfo(fh=fh), attrs

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        # into one reused buffer: pyfuse3 sends the reply before the next request runs
        buf = self._rbuf
        if len(buf) < size:
            buf = self._rbuf = bytearray(size)
        view = memoryview(buf)
        return view[:self.sys.preadv(fh, [view[:size]], off)]  # type: ignore[return-value]

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return self.sys.pwrite64(fh, buf, off)

    @_errors
    async def release(self, fh: int) -> None:
        self.sys.close(fh)

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        (self.sys.fdatasync if datasync else self.sys.fsync)(fh)

    # -- extended attributes ----------------------------------------------------------------
    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self._as(ctx)
        return self.sys.getxattrat(self.fd(inode), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, name)

    @_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        self._as(ctx)
        self.sys.setxattrat(self.fd(inode), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, name, value)

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        self._as(ctx)
        return self.sys.listxattrat(self.fd(inode), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._as(ctx)
        self.sys.removexattrat(self.fd(inode), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, name)

    def close_all(self) -> None:
        """Drop every inode's descriptor (after the FUSE session ended)."""
        for node in self.nodes.values():
            try:
                self.sys.close(node.fd)
            except OSError:
                pass
        self.nodes.clear()
        self.by_key.clear()

