"""Walk a mounted image through ``kernel.sys`` and write every file to a tar archive.

The walk holds one directory descriptor per level and names everything
relative to it (``fstatat``, ``openat``, ``readlinkat``, ``getxattrat``), so
no path is resolved twice. Each entry carries its type, mode, numeric owner,
nanosecond times, every extended attribute, its POSIX ACLs, device numbers,
symlink target; hard links become link entries to the first path; sparse
files become sparse entries (their map from SEEK_DATA/SEEK_HOLE).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import kernel
from kernel import (
    AT_SYMLINK_NOFOLLOW,
    DT_DIR,
    DT_REG,
    DT_UNKNOWN,
    O_DIRECTORY,
    O_NOFOLLOW,
    O_RDONLY,
    Dirent,
)

from ..common.regions import data_regions
from ..common.xattrs import read_xattrs
from .archive import ACL_TYPE_ACCESS, ACL_TYPE_DEFAULT, ArchiveWriteError, TarWriter

log = logging.getLogger("fs2tar")

ACL_ACCESS = b"system.posix_acl_access"
ACL_DEFAULT = b"system.posix_acl_default"
SELINUX = b"security.selinux"
# XFS lists its on-disk ACLs a second time under these names (root only); they
# are the ACLs already exported as ACL entries, and restoring the ACL on XFS
# recreates them. libarchive leaves them out for the same reason.
READ_CHUNK = 1 << 20
SMALL_FILE = 4 << 20  # read whole before writing the header: errors never leave half an entry
# exporters sharing a walk take turns writing this many consecutive entries: enough that
# two of them seldom read the same readahead window of small files (with 32, each read
# nearly every window of the other's files too). FS2TAR_BLOCK sets another size: the tests
# use it to spread small images over many blocks.
_block = os.environ.get("FS2TAR_BLOCK", "")
BLOCK = int(_block) if _block.isdigit() and int(_block) > 0 else 256

# the walk's items: (index, kind, path, parent path, name, d_type, d_ino, first name of the
# inode or None, errors [(errno, message)] or None, stat or None); tuples, as they travel
DIR, FILE, FAIL = 0, 1, 2
Item = tuple[int, int, bytes, bytes, bytes, int, int, "bytes | None",
             "list[tuple[int, str]] | None", "kernel.Stat | None"]


def _by_name(d: Dirent) -> bytes:
    return d.d_name


def _fail(index: int, path: bytes, parent: bytes, name: bytes, e: OSError) -> Item:
    return (index, FAIL, path, parent, name, DT_UNKNOWN, 0, None,
            [(e.errno or errno.EIO, e.strerror or os.strerror(e.errno or errno.EIO))], None)


def _link(first: bytes | None, d_ino: int, st: kernel.Stat) -> bytes | None:
    """The name to archive a hard link to: ``first``, an earlier name of this inode."""
    if first is None or st.st_nlink < 2 or st.st_ino != d_ino or stat.S_ISDIR(st.st_mode):
        return None
    return first


class SkipEntry(Exception):
    """A file could not be read; with --keep-going it is reported and left out."""


@dataclass
class Stats:
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    dropped_xattrs: int = 0
    sockets: int = 0


def parse_acl(value: bytes) -> list[tuple[int, int, int]]:
    """The Linux posix_acl xattr format: a version word, then (tag, perm, id) entries."""
    if len(value) < 4 or (len(value) - 4) % 8:
        raise ValueError("malformed ACL")
    return [struct.unpack_from("<HHI", value, off) for off in range(4, len(value), 8)]


_PATH_STEP = 2048  # bytes of a path resolved by one openat (PATH_MAX is 4096)


def _open_deep(sys: kernel.Syscalls, dfd: int, rel: bytes) -> int:
    """Open directory ``rel`` under ``dfd``, a piece of the path at a time when it is longer
    than one path walk may be (a tree deeper than PATH_MAX is archived like any other)."""
    flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW
    own = False
    try:
        while len(rel) > _PATH_STEP:
            cut = rel.rfind(b"/", 0, _PATH_STEP)
            if cut <= 0:  # no separator early enough: let the kernel judge the name
                break
            nfd = sys.openat(dfd, rel[:cut], flags)
            if own:
                sys.close(dfd)
            dfd, own, rel = nfd, True, rel[cut + 1:]
        fd = sys.openat(dfd, rel, flags)
    finally:
        if own:
            sys.close(dfd)
    return fd


class TreeWalk:
    """The walk of the tree at ``root``: every entry as an ``Item``."""

    def __init__(self, sys: kernel.Syscalls, root: str) -> None:
        self.sys = sys
        self.root = root
        self.entries = 0  # entries in the walk, once it is over

    def items(self) -> Iterator[tuple[Item, int]]:
        """The walk: every entry as an ``Item`` numbered in walk order (depth first, names
        sorted), with a descriptor valid until the next one is asked for (DIR: the
        directory; FILE and FAIL: the directory holding it).

        Only what the walk itself needs is read here (listings, d_type, subdirectories
        opened and their stat, for loops); everything about an entry that goes into the
        archive is left to ``do_item``, so that other processes can do it.
        """
        sys = self.sys
        rootfd = sys.open(self.root, O_RDONLY | O_DIRECTORY)
        stack: list[tuple[int, bytes, int, list[Dirent], int]] = []
        try:
            st = sys.fstat(rootfd)
            dirs = {(st.st_dev, st.st_ino)}  # a directory met twice: a loop in a damaged image
            first: dict[tuple[int, int], bytes] = {}  # (st_dev, d_ino) -> its first name
            names, errors = self._names(rootfd)
            index = 0
            yield (0, DIR, b"./", b"", b"", DT_DIR, 0, None, errors, st), rootfd
            stack[:] = [(rootfd, b"./", st.st_dev, names, 0)]
            while stack:
                dfd, prefix, dev, names, i = stack[-1]
                if i == len(names):
                    stack.pop()
                    if dfd != rootfd:
                        sys.close(dfd)
                    continue
                stack[-1] = (dfd, prefix, dev, names, i + 1)
                d = names[i]
                index += 1
                name = d.d_name
                path = prefix + name
                dtype = d.d_type
                est: kernel.Stat | None = None
                if dtype == DT_UNKNOWN:  # not in the directory: ask the inode
                    try:
                        est = sys.fstatat(dfd, name, AT_SYMLINK_NOFOLLOW)
                    except OSError as e:
                        yield _fail(index, path, prefix, name, e), dfd
                        continue
                    dtype = DT_DIR if stat.S_ISDIR(est.st_mode) else \
                        DT_REG if stat.S_ISREG(est.st_mode) else DT_UNKNOWN
                if dtype == DT_DIR:
                    try:
                        sub = sys.openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
                    except OSError as e:
                        if e.errno in (errno.ENOTDIR, errno.ELOOP):  # not one (damaged image)
                            yield (index, FILE, path, prefix, name, DT_UNKNOWN, d.d_ino, None,
                                   None, None), dfd
                        else:
                            yield _fail(index, path, prefix, name, e), dfd
                        continue
                    try:
                        est = sys.fstat(sub)
                        key = (est.st_dev, est.st_ino)
                        loop = key in dirs
                        if not loop:
                            dirs.add(key)
                            subnames, errors = self._names(sub)
                    except BaseException:
                        sys.close(sub)
                        raise
                    if loop:
                        sys.close(sub)
                        yield _fail(index, path, prefix, name, OSError(
                            errno.ELOOP, "directory loop: this directory is already in the "
                            "archive (damaged image)")), dfd
                        continue
                    subpath = path + b"/"
                    stack.append((sub, subpath, est.st_dev, subnames, 0))  # closed by the walk
                    yield (index, DIR, subpath, prefix, name, DT_DIR, d.d_ino, None, errors,
                           est), sub
                    continue
                # not a directory: the first name of each inode carries a hard link's data
                was = first.setdefault((dev, d.d_ino), path)
                yield (index, FILE, path, prefix, name, dtype, d.d_ino,
                       was if was != path else None, None, est), dfd
            self.entries = index + 1
        finally:
            for dfd, *_rest in stack:
                if dfd != rootfd:
                    sys.close(dfd)
            sys.close(rootfd)

    def _names(self, dfd: int) -> tuple[list[Dirent], list[tuple[int, str]]]:
        """The entries of directory ``dfd`` sorted by name, and the errors met reading it
        (errno, message), to report after the directory's own entry."""
        entries: list[Dirent] = []
        errors: list[tuple[int, str]] = []
        while True:
            try:
                batch = self.sys.getdents64(dfd, 1 << 16)
            except OSError as e:
                bad = getattr(e, "dirent_name", None)
                if bad is not None:
                    # one damaged entry (a name with '/' or NUL): report it, read on
                    errors.append((e.errno or errno.EIO, f"invalid name {bad!r} left out"))
                    continue
                errors.append((e.errno or errno.EIO, e.strerror or os.strerror(e.errno or 5)))
                break
            if not batch:
                break
            entries.extend(d for d in batch if d.d_name not in (b".", b".."))
        entries.sort(key=_by_name)
        return entries, errors


class Exporter:
    def __init__(self, sys: kernel.Syscalls, root: str, writer: TarWriter, *,
                 keep_going: bool = False, verbose: bool = False,
                 selinux_out: BinaryIO | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 warn: Callable[[str], None] = log.warning, birthtime: bool = False,
                 block_done: Callable[[Stats], None] | None = None) -> None:
        """``block_done`` is called after each block of BLOCK entries it wrote (entries
        numbered in walk order; a process writing every n-th block of another's walk)."""
        self.sys = sys
        self.root = root
        self.w = writer
        self.keep_going = keep_going
        self.verbose = verbose
        self.selinux_out = selinux_out
        self.progress = progress
        self.warn = warn
        self.stats = Stats()
        self.block_done = block_done
        self.entries = 0  # entries in the walk, once it is over
        self._dirfds: OrderedDict[bytes, int] = OrderedDict()
        self._rootfd = -1
        self._buf = bytearray(1 << 16)
        self._block = -1
        self._xattrs_ok = writer.format == "pax"
        self.birthtime = birthtime

    # -- the walk ------------------------------------------------------------------------
    def run(self) -> Stats:
        """Walk the tree and write every entry (one process)."""
        walk = TreeWalk(self.sys, self.root)
        for item, fd in walk.items():
            self.do_item(item, fd)
        self.finish()
        self.entries = walk.entries
        return self.stats

    def do_item(self, item: Item, fd: int | None = None) -> None:
        """Write one entry of the walk. ``fd`` is the descriptor ``items`` gave with it;
        without one (another process walked), the directory is opened here by its name."""
        index, kind, path, parent, name, dtype, d_ino, first, errors, st = item
        block = index // BLOCK
        if block != self._block:
            self._end_block()
            self._block = block
        if kind == FAIL:
            assert errors
            self._failed(path, OSError(*errors[0]))
            return
        if kind == DIR:
            try:
                dfd = fd if fd is not None else self._dir(path)
                if st is None or fd is None:
                    st = self.sys.fstat(dfd)
            except OSError as e:
                self._failed(path, e)
                return
            self._entry(dfd, b"", path, st)
            for err in errors or ():
                self._failed(path, OSError(*err))
            return
        try:
            dfd = fd if fd is not None else self._dir(parent)
        except OSError as e:
            self._failed(path, e)
            return
        self._file(dfd, name, path, dtype, d_ino, first, st)

    def finish(self) -> None:
        """After the last item: the last block is done."""
        self._end_block()

    def _end_block(self) -> None:
        if self._block >= 0 and self.block_done is not None:
            self.block_done(self.stats)
        self._block = -1

    def _dir(self, path: bytes) -> int:
        """A descriptor of the directory named ``path`` in the archive (kept for a while:
        the entries of one directory come together)."""
        fds = self._dirfds
        fd = fds.get(path)
        if fd is not None:
            fds.move_to_end(path)
            return fd
        if self._rootfd < 0:
            self._rootfd = self.sys.open(self.root, O_RDONLY | O_DIRECTORY)
        fd = _open_deep(self.sys, self._rootfd, path[2:].rstrip(b"/") or b".")
        fds[path] = fd
        if len(fds) > 16:
            _old, old_fd = fds.popitem(last=False)
            self.sys.close(old_fd)
        return fd

    def close(self) -> None:
        """Let go of the descriptors ``do_item`` opened."""
        for fd in self._dirfds.values():
            self.sys.close(fd)
        self._dirfds.clear()
        if self._rootfd >= 0:
            self.sys.close(self._rootfd)
            self._rootfd = -1

    def _file(self, dfd: int, name: bytes, path: bytes, dtype: int, d_ino: int,
              first: bytes | None, st: kernel.Stat | None) -> None:
        """Write a non-directory entry of directory ``dfd``; ``first``: an earlier name of
        the inode ``d_ino`` in the walk."""
        sys = self.sys
        if st is None and dtype == DT_REG:
            # open it first: its stat, attributes and data then come from the descriptor
            try:
                fd = sys.openat(dfd, name, O_RDONLY | O_NOFOLLOW)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENXIO):  # a symlink, fifo or device
                    self._failed(path, e)
                    return
            else:
                try:
                    st = sys.fstat(fd)
                    if stat.S_ISREG(st.st_mode):
                        self._entry(dfd, name, path, st, fd, _link(first, d_ino, st))
                        return
                finally:
                    sys.close(fd)
        if st is None:
            try:
                st = sys.fstatat(dfd, name, AT_SYMLINK_NOFOLLOW)
            except OSError as e:
                self._failed(path, e)
                return
        if stat.S_ISDIR(st.st_mode):
            # not walked into: the directory entry called it a file
            self._failed(path, OSError(errno.EUCLEAN, "directory entry of a file type leads to a "
                                       "directory; left out (damaged image)"))
            return
        self._entry(dfd, name, path, st, -1, _link(first, d_ino, st))

    def _failed(self, path: bytes, e: OSError) -> None:
        where = os.fsdecode(path)
        if not self.keep_going:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno or errno.EIO), where) from e
        self.warn(f"{where}: {e.strerror or e}; left out")
        self.stats.skipped.append(where)

    # -- one entry -------------------------------------------------------------------------
    def _entry(self, dfd: int, name: bytes, path: bytes, st: kernel.Stat, fd: int = -1,
               first: bytes | None = None) -> None:
        """Write one entry; ``fd``, when given, is the regular file already open; ``first``
        makes it a hard link to that name."""
        try:
            self._write_entry(dfd, name, path, st, fd, first)
        except SkipEntry:
            pass
        except OSError as e:
            self._failed(path, e)
        except ArchiveWriteError as e:
            if e.fatal:
                raise
            # libarchive left this entry out (a time or name the format
            # cannot hold); the archive itself is fine
            self._failed(path, OSError(errno.EOVERFLOW, f"{e} in --format {self.w.format}"))

    def _xattrs(self, dfd: int, name: bytes) -> list[tuple[bytes, bytes]]:
        return read_xattrs(self.sys, dfd, name)

    def _write_entry(self, dfd: int, name: bytes, path: bytes, st: kernel.Stat,
                     fd: int, first: bytes | None) -> None:
        sys, w = self.sys, self.w
        mode = st.st_mode
        ftype = stat.S_IFMT(mode)
        if ftype == stat.S_IFSOCK:
            self.stats.sockets += 1
            self.warn(f"{os.fsdecode(path)}: socket left out (tar cannot store sockets)")
            return
        xattrs = self._xattrs(fd, b"") if fd >= 0 else self._xattrs(dfd, name)
        size = st.st_size if ftype == stat.S_IFREG and first is None else 0
        data: memoryview | None = None
        opened = False
        if fd < 0 and ftype == stat.S_IFREG and first is None:
            fd = sys.openat(dfd, name, O_RDONLY | O_NOFOLLOW)
            opened = True
        if first is not None:
            fd = -1
        try:
            regions = None
            if fd >= 0:
                if size and st.st_blocks * 512 < size and self.w.format == "pax":
                    regions = self._data_regions(fd, size)
                if regions is None and size <= SMALL_FILE:
                    data = self._read_all(fd, size, path)
            w.begin(path, mode, st.st_uid, st.st_gid, size, st.st_mtime_ns, st.st_atime_ns,
                    st.st_ctime_ns, st.st_birthtime_ns if self.birthtime else None)
            if first is not None:
                w.set_hardlink(first)
            elif ftype == stat.S_IFLNK:
                w.set_symlink(sys.readlinkat(dfd, name))
            elif ftype in (stat.S_IFCHR, stat.S_IFBLK):
                w.set_rdev(os.major(st.st_rdev), os.minor(st.st_rdev))
            self._add_xattrs(path, xattrs)
            if regions is not None:
                for off, length in regions:
                    w.add_sparse(off, length)
            w.write_header()
            if fd >= 0:
                if data is not None:
                    w.write(data)
                else:
                    self._copy(fd, size, regions, path)
            w.finish_entry()
        finally:
            if opened:
                sys.close(fd)
        self.stats.files += 1
        self.stats.bytes += size
        if self.verbose:
            self.warn(os.fsdecode(path))
        if self.progress is not None:
            self.progress(self.stats.files, self.stats.bytes)

    def _add_xattrs(self, path: bytes, xattrs: list[tuple[bytes, bytes]]) -> None:
        w = self.w
        for xname, value in xattrs:
            if xname == SELINUX and self.selinux_out is not None:
                ctx = value.rstrip(b"\0")
                self.selinux_out.write(b"/" + path.lstrip(b".").lstrip(b"/") + b" " + ctx + b"\n")
            if not self._xattrs_ok:
                self.stats.dropped_xattrs += 1
                continue
            if xname in (ACL_ACCESS, ACL_DEFAULT):
                try:
                    entries = parse_acl(value)
                except ValueError:
                    self.warn(f"{os.fsdecode(path)}: malformed {xname.decode()} left out")
                    continue
                w.add_acl(ACL_TYPE_ACCESS if xname == ACL_ACCESS else ACL_TYPE_DEFAULT, entries)
                continue
            w.add_xattr(xname, value)

    # -- file data ---------------------------------------------------------------------------
    def _buffer(self, size: int) -> memoryview:
        """A reused buffer of ``size`` bytes (reads go straight into it)."""
        if len(self._buf) < size:
            self._buf = bytearray(max(size, 2 * len(self._buf)))
        return memoryview(self._buf)[:size]

    def _read_all(self, fd: int, size: int, path: bytes) -> memoryview:
        """The whole file, in the reused buffer (valid until the next read)."""
        view = self._buffer(size)
        got = self.sys.preadv(fd, [view], 0) if size else 0
        if got != size:
            raise OSError(errno.EIO, f"file shrank to {got} of {size} bytes while read",
                          os.fsdecode(path))
        return view

    def _data_regions(self, fd: int, size: int) -> list[tuple[int, int]] | None:
        """The data regions (offset, length) of a file with holes, or None if it has none."""
        regions = [(a, b - a) for a, b in data_regions(self.sys.lseek, fd, size)]
        if regions == [(0, size)]:
            return None
        if not regions or regions[-1][0] + regions[-1][1] < size:
            regions.append((size, 0))  # the map must reach the end of the file
        return regions

    def _copy(self, fd: int, size: int, regions: list[tuple[int, int]] | None, path: bytes) -> None:
        """Stream file data; on a read error the entry is completed with zeros."""
        w, sys = self.w, self.sys
        spans = regions if regions is not None else [(0, size)]
        pos = 0
        try:
            for off, length in spans:
                if off > pos:
                    w.write_zeros(off - pos)
                    pos = off
                end = off + length
                while pos < end:
                    view = self._buffer(min(READ_CHUNK, end - pos))
                    n = sys.preadv(fd, [view], pos)
                    if not n:
                        raise OSError(errno.EIO, "file shorter than its size", os.fsdecode(path))
                    w.write(view[:n])
                    pos += n
                    if self.progress is not None:
                        self.progress(self.stats.files, self.stats.bytes + pos)
            if pos < size:
                w.write_zeros(size - pos)
        except OSError as e:
            if not self.keep_going:
                raise
            # the header is out: pad the entry so the archive stays readable
            w.write_zeros(size - pos)  # libarchive counts the logical size, holes included
            w.finish_entry()
            self._failed(path, OSError(e.errno, f"{e.strerror}; the rest of the file reads as "
                                                "zeros in the archive"))
            raise SkipEntry() from e


def describe_stats(stats: Stats) -> str:
    return f"{stats.files} entries, {stats.bytes} bytes"

