"""What a filesystem driver implements: superblocks, inodes and their operations.

The VFS calls these with the kernel lock held, after it has resolved paths,
checked permissions and validated arguments (names are non-empty, at most
255 bytes, without '/' or NUL, never "." or ".."). A driver raises
``KernelError`` (``kernel.errors.kerr``) with Linux's errno for what only it
can know: ENOTEMPTY, ENOSPC, EMLINK, EUCLEAN for damage, EOPNOTSUPP for what
it cannot do.

Inode attributes mirror ``struct inode``: times are integers in nanoseconds
since the epoch. A driver keeps them current in memory and persists them in
``write_inode`` (which the VFS calls through ``mark_dirty`` after changing
attributes) or as part of its own operations.

Directory operations that change the namespace (``create``, ``link``,
``unlink``, ``rmdir``, ``rename``) update the times and link counts of the
inodes they touch as Linux's filesystems do (parent mtime/ctime, target
ctime), using ``sb.now()``.
"""

from __future__ import annotations

import contextlib
import errno
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import kerr
from ..uapi import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG

if TYPE_CHECKING:
    from ..block.blkdev import BlockDevice


@dataclass
class NewInode:
    """Everything a new inode starts with; the VFS has applied umask and setgid rules."""

    mode: int
    uid: int
    gid: int
    rdev: int = 0
    target: bytes = b""  # symlink target
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)  # inherited ACLs, labels


@dataclass
class SetAttr:
    """Attribute changes for ``Inode.setattr``; None means unchanged."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None

    def apply_to(self, inode: Inode) -> None:
        """Set the inode's fields that change (all but the size, which the driver
        handles); per file written, so spelled out rather than looped over."""
        if self.mode is not None:
            inode.mode = self.mode
        if self.uid is not None:
            inode.uid = self.uid
        if self.gid is not None:
            inode.gid = self.gid
        if self.atime_ns is not None:
            inode.atime_ns = self.atime_ns
        if self.mtime_ns is not None:
            inode.mtime_ns = self.mtime_ns
        if self.ctime_ns is not None:
            inode.ctime_ns = self.ctime_ns


@dataclass
class StatFs:
    f_type: int
    f_bsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int
    f_fsid: int = 0
    f_namelen: int = 255
    f_frsize: int = 0
    f_flags: int = 0

    def __post_init__(self) -> None:
        if not self.f_frsize:
            self.f_frsize = self.f_bsize


@dataclass(frozen=True)
class Extent:
    """A mapped range of a file: ``count`` blocks from logical ``lblk``.

    ``pblk`` is in filesystem blocks from the start of the device;
    ``unwritten`` extents read as zeros.
    """

    lblk: int
    count: int
    pblk: int
    unwritten: bool = False


class Inode:
    """Base of every driver's in-memory inode."""

    __slots__ = ("sb", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blocks",
                 "atime_ns", "mtime_ns", "ctime_ns", "btime_ns", "generation", "i_count",
                 "acl_cache", "__weakref__")

    def __init__(self, sb: SuperBlock, ino: int) -> None:
        self.sb = sb
        self.ino = ino
        self.mode = 0
        self.nlink = 0
        self.uid = 0
        self.gid = 0
        self.rdev = 0
        self.size = 0
        self.blocks = 0  # in 512-byte units, as st_blocks
        self.atime_ns = 0
        self.mtime_ns = 0
        self.ctime_ns = 0
        self.btime_ns: int | None = None
        self.generation = 0
        self.i_count = 0  # open files, cwd/root references: eviction waits for 0
        self.acl_cache: dict[bytes, object] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sb.fstype}:{self.ino} mode={self.mode:o}>"

    @property
    def dev(self) -> int:
        """st_dev: the superblock's device (btrfs subvolumes override it)."""
        return self.sb.dev

    @property
    def is_dir(self) -> bool:
        return self.mode & S_IFMT == S_IFDIR

    @property
    def is_reg(self) -> bool:
        return self.mode & S_IFMT == S_IFREG

    @property
    def is_lnk(self) -> bool:
        return self.mode & S_IFMT == S_IFLNK

    # -- directories ----------------------------------------------------------------
    def lookup(self, name: bytes) -> Inode | None:
        """The inode named ``name`` in this directory, or None."""
        raise kerr(errno.ENOTDIR)

    def iterate(self, pos: int) -> Iterator[tuple[bytes, int, int, int]]:
        """Entries from cookie ``pos`` on: ``(name, ino, d_type, next_pos)``.

        Includes "." and "..". ``next_pos`` is the ``d_off`` of the entry:
        iterating again from it resumes after the entry. Cookies stay valid
        while the directory changes (entries added or removed elsewhere).
        """
        raise kerr(errno.ENOTDIR)

    def create(self, name: bytes, spec: NewInode) -> Inode:
        """Create an inode of any type (``spec.mode``) and link it as ``name``."""
        raise kerr(errno.EPERM)

    def link(self, name: bytes, inode: Inode) -> None:
        raise kerr(errno.EPERM)

    def unlink(self, name: bytes, inode: Inode) -> None:
        raise kerr(errno.EPERM)

    def rmdir(self, name: bytes, inode: Inode) -> None:
        raise kerr(errno.EPERM)

    def rename(self, old_name: bytes, inode: Inode, new_dir: Inode, new_name: bytes,
               target: Inode | None, flags: int) -> None:
        """Move ``old_name`` (``inode``) to ``new_dir``/``new_name``.

        ``target`` is the inode currently at the destination (replaced, or
        swapped with RENAME_EXCHANGE). The VFS has checked types and
        emptiness rules except ENOTEMPTY, which the driver reports.
        """
        raise kerr(errno.EPERM)

    # -- attributes -------------------------------------------------------------------
    def setattr(self, attr: SetAttr) -> None:
        """Apply validated attribute changes (``size`` truncates or extends)."""
        raise kerr(errno.EPERM)

    def readlink(self) -> bytes:
        raise kerr(errno.EINVAL)

    # -- file data --------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (short only at end of file)."""
        raise kerr(errno.EINVAL)

    def read_into(self, offset: int, dest: memoryview) -> int:
        """Read into ``dest`` from ``offset``; the byte count (short only at end of file).
        Drivers that map blocks read straight into ``dest``."""
        data = self.read(offset, len(dest))
        dest[:len(data)] = data
        return len(data)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        raise kerr(errno.EINVAL)

    def extents(self, start: int, end: int) -> Iterator[Extent]:
        """Mapped extents overlapping logical blocks [start, end), in order.

        The default describes a file with no holes, which makes SEEK_DATA
        and SEEK_HOLE correct (if imprecise) for drivers that do not map.
        """
        bs = self.sb.blocksize
        nblocks = (self.size + bs - 1) // bs
        if start < nblocks:
            yield Extent(start, min(end, nblocks) - start, 0)

    def mapped_run(self, first: int, last: int) -> int:
        """The device block of logical block ``first`` when one written extent maps all
        of [first, last), else -1 (small reads take this path; drivers with a cached map
        answer it without building extents)."""
        for ext in self.extents(first, last):
            if ext.lblk <= first and ext.lblk + ext.count >= last and not ext.unwritten:
                return ext.pblk + first - ext.lblk
            break
        return -1

    def fallocate(self, mode: int, offset: int, length: int) -> None:
        raise kerr(errno.EOPNOTSUPP)

    def fsync(self, datasync: bool) -> None:
        self.sb.sync()

    # -- extended attributes (full names, b"user.foo") ---------------------------------------
    def listxattr(self) -> list[bytes]:
        return []

    def getxattr(self, name: bytes) -> bytes:
        raise kerr(errno.ENODATA)

    def setxattr(self, name: bytes, value: bytes, flags: int) -> None:
        raise kerr(errno.EOPNOTSUPP)

    def removexattr(self, name: bytes) -> None:
        raise kerr(errno.EOPNOTSUPP)

    # -- lifetime -------------------------------------------------------------------------
    def mark_dirty(self) -> None:
        """The in-memory attributes changed: persist them (now or at sync)."""
        self.sb.write_inode(self)

    def evict(self) -> None:
        """The last reference to an inode with no links went away: free it."""


# A directory of a read-only filesystem looked up often (dcache misses, so distinct names)
# has every name read into a table, and later lookups are a dictionary probe: a walk of the
# tree looks up every name, while a few lookups should not read a large directory. The
# table comes after LOOKUPS_FOR_TABLE lookups, or one per TABLE_BYTES_PER_LOOKUP bytes of
# directory if more (reading the whole directory then costs about what the hashed searches
# did).
# A small directory (SMALL_DIR_BYTES at most) gets its table at the first lookup: reading
# it whole costs about what one search does.
LOOKUPS_FOR_TABLE = 4
TABLE_BYTES_PER_LOOKUP = 16384
SMALL_DIR_BYTES = 8192


def table_now(lookups: int, dir_size: int) -> bool:
    """Whether the ``lookups``-th lookup in a directory of ``dir_size`` bytes should read
    every name into a table (true once only)."""
    if dir_size <= SMALL_DIR_BYTES:
        return lookups == 1
    return lookups == max(LOOKUPS_FOR_TABLE, dir_size // TABLE_BYTES_PER_LOOKUP)


class InodeCache:
    """Inode number -> the in-memory inode, as long as something else holds it (a dentry,
    an open file). Plain weak references, without WeakValueDictionary's callbacks (which cost
    a Python-level object per entry); the references of inodes gone are swept out as the
    table grows."""

    __slots__ = ("_refs", "_sweep_at")

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[Inode]] = {}
        self._sweep_at = 1024

    def get(self, ino: int) -> Inode | None:
        ref = self._refs.get(ino)
        return ref() if ref is not None else None

    def put(self, ino: int, inode: Inode) -> None:
        refs = self._refs
        refs[ino] = weakref.ref(inode)
        if len(refs) >= self._sweep_at:
            for k in [k for k, r in refs.items() if r() is None]:
                del refs[k]
            self._sweep_at = max(1024, 2 * len(refs))


class SuperBlock:
    """Base of every driver's mounted-filesystem object."""

    fstype = "none"
    magic = 0

    def __init__(self, kernel: object, bdev: BlockDevice | None, flags: int) -> None:
        from ..uapi import MS_RDONLY

        self.kernel = kernel
        self.bdev = bdev
        self.flags = flags
        self.rdonly = bool(flags & MS_RDONLY)
        self.blocksize = 4096
        self.dev = bdev.dev if bdev is not None else 0
        self.root: Inode | None = None
        self.mounts = 0  # how many mounts share this superblock
        self.max_links = 65000
        self.time_gran = 1  # timestamp granularity in ns
        self.maxbytes = (1 << 63) - 1  # s_maxbytes: EFBIG beyond
        self.posix_acl = True  # ACLs stored in system.posix_acl_* are enforced
        self._icache = InodeCache()
        self.subtype = ""

    def now(self) -> int:
        """current_time(): the kernel clock, truncated to this fs's granularity."""
        t = self.kernel.clock()  # type: ignore[attr-defined]
        return t - t % self.time_gran

    def iget(self, ino: int, load: Callable[[int], Inode]) -> Inode:
        """The one in-memory inode for ``ino``, loading it with ``load`` on a miss."""
        inode = self._icache.get(ino)
        if inode is None:
            inode = load(ino)
            self._icache.put(ino, inode)
        return inode

    def cached_inode(self, ino: int) -> Inode | None:
        return self._icache.get(ino)

    def remember(self, inode: Inode) -> Inode:
        self._icache.put(inode.ino, inode)
        return inode

    # -- operations ---------------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[object]:
        """Group every change of one operation (a jbd2 handle, an xfs transaction).

        The VFS wraps each modifying system call in one; the default does nothing.
        """
        return contextlib.nullcontext()

    def statfs(self) -> StatFs:
        raise kerr(errno.ENOSYS)

    def write_inode(self, inode: Inode) -> None:
        """Persist an inode's attributes (a read-only driver has nothing to do)."""

    def sync(self) -> None:
        """Write back everything dirty and flush the device."""

    def reclaim(self) -> bool:
        """Out of space: commit what the running transaction freed, so that it can be
        allocated (ext4_should_retry_alloc). True if that was done and the failed system
        call is worth one more try. Called between system calls only."""
        return False

    def remount(self, flags: int, options: str) -> None:
        from ..uapi import MS_RDONLY

        if not flags & MS_RDONLY and self.rdonly:
            raise kerr(errno.EROFS, self.fstype, "this filesystem cannot be written")
        self.flags = flags
        self.rdonly = bool(flags & MS_RDONLY)

    def put_super(self) -> None:
        """Unmount: write back, mark the filesystem clean, release the device."""

    def show_options(self) -> str:
        return ""


class FileSystemType:
    """A registered filesystem driver."""

    name = "none"
    requires_dev = True

    def probe(self, bdev: BlockDevice) -> bool:
        """Cheap check of the superblock magic, used to detect the type."""
        return False

    def mount(self, kernel: object, bdev: BlockDevice | None, flags: int, options: str) -> SuperBlock:
        raise NotImplementedError
