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
from collections.abc import Callable
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
    SEEK_DATA,
    SEEK_HOLE,
    Dirent,
)

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
BLOCK = 32  # exporters sharing a walk take turns writing this many consecutive entries


def _by_name(d: Dirent) -> bytes:
    return d.d_name


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


class Exporter:
    def __init__(self, sys: kernel.Syscalls, root: str, writer: TarWriter, *,
                 keep_going: bool = False, verbose: bool = False,
                 selinux_out: BinaryIO | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 warn: Callable[[str], None] = log.warning, birthtime: bool = False,
                 share: tuple[int, int] | None = None,
                 block_done: Callable[[Stats], None] | None = None) -> None:
        """``share=(k, n)``: this exporter is the k-th of n walking the same tree, and writes
        every n-th block of BLOCK entries from its k-th on; ``block_done`` is called after
        each block it wrote."""
        self.sys = sys
        self.root = root
        self.w = writer
        self.keep_going = keep_going
        self.verbose = verbose
        self.selinux_out = selinux_out
        self.progress = progress
        self.warn = warn
        self.stats = Stats()
        self._first: dict[tuple[int, int], bytes] = {}  # (st_dev, d_ino) -> first name
        self.share = share
        self.block_done = block_done
        self.entries = 0  # entries numbered so far, in walk order
        self._buf = bytearray(1 << 16)
        self._block = -1
        self._xattrs_ok = writer.format == "pax"
        self.birthtime = birthtime

    # -- the walk ------------------------------------------------------------------------
    def owns(self, index: int) -> bool:
        """Whether the entry at ``index`` (in walk order) is this exporter's to write."""
        share = self.share
        return share is None or (index // BLOCK) % share[1] == share[0]

    def run(self) -> Stats:
        """Walk the tree depth first, names sorted, and write every entry this exporter owns.

        The walk itself (which directories are entered, in which order) depends only on
        what every exporter of a share sees the same way: directory listings, their d_type,
        and whether a subdirectory opens. So exporters sharing one walk number every entry
        alike, and each writes its own blocks of entries.
        """
        sys = self.sys
        rootfd = sys.open(self.root, O_RDONLY | O_DIRECTORY)
        try:
            st = sys.fstat(rootfd)
            dirs = {(st.st_dev, st.st_ino)}  # a directory met twice: a loop in a damaged image
            if self._next_index():
                self._entry(rootfd, b"", b"./", st)
            stack: list[tuple[int, bytes, int, list[Dirent], int]] = [
                (rootfd, b"./", st.st_dev, self._names(rootfd, b"./", self.owns(0)), 0)]
            while stack:
                dfd, prefix, dev, names, i = stack[-1]
                if i == len(names):
                    stack.pop()
                    if dfd != rootfd:
                        sys.close(dfd)
                    continue
                stack[-1] = (dfd, prefix, dev, names, i + 1)
                d = names[i]
                sub = self._visit(dfd, prefix, dev, d, dirs)
                if sub is not None:
                    subfd, subpath, subdev, own = sub
                    try:
                        stack.append((subfd, subpath, subdev, self._names(subfd, subpath, own), 0))
                    except BaseException:
                        sys.close(subfd)
                        raise
            self._end_block()
        finally:
            sys.close(rootfd)
        return self.stats

    def _next_index(self) -> bool:
        """Number the next entry; True when it is ours to write."""
        i = self.entries
        self.entries = i + 1
        block = i // BLOCK
        if block != self._block:
            self._end_block()
            self._block = block
        return self.owns(i)

    def _end_block(self) -> None:
        if self._block >= 0 and self.block_done is not None and self.owns(self._block * BLOCK):
            self.block_done(self.stats)
        self._block = -1

    def _visit(self, dfd: int, prefix: bytes, dev: int, d: Dirent, dirs: set[tuple[int, int]]
               ) -> tuple[int, bytes, int, bool] | None:
        """Number and (when ours) write the entry ``d`` of directory ``dfd``; for a directory,
        return its open descriptor, path, st_dev and ownership to walk into."""
        sys = self.sys
        own = self._next_index()
        name = d.d_name
        path = prefix + name
        dtype = d.d_type
        st = None
        if dtype == DT_UNKNOWN:  # the type is not in the directory: every walker asks the inode
            try:
                st = sys.fstatat(dfd, name, AT_SYMLINK_NOFOLLOW)
            except OSError as e:
                if own:
                    self._failed(path, e)
                return None
            dtype = DT_DIR if stat.S_ISDIR(st.st_mode) else DT_REG if stat.S_ISREG(st.st_mode) \
                else DT_UNKNOWN
        if dtype == DT_DIR:
            try:
                sub = sys.openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            except OSError as e:
                if own:
                    if e.errno in (errno.ENOTDIR, errno.ELOOP):
                        self._other(dfd, name, path, None)  # not a directory (damaged image)
                    else:
                        self._failed(path, e)
                return None
            try:
                st = sys.fstat(sub)
                key = (st.st_dev, st.st_ino)
                if key in dirs:
                    if own:
                        self._failed(path, OSError(errno.ELOOP, "directory loop: this directory "
                                                   "is already in the archive (damaged image)"))
                    sys.close(sub)
                    return None
                dirs.add(key)
                if own:
                    self._entry(sub, b"", path + b"/", st)
            except BaseException:
                sys.close(sub)
                raise
            return sub, path + b"/", st.st_dev, own
        # not a directory: remember the first name of each inode, for hard links
        self._first.setdefault((dev, d.d_ino), path)
        if not own:
            return None
        if st is None and dtype == DT_REG:
            # open it first: its stat, attributes and data then come from the descriptor
            try:
                fd = sys.openat(dfd, name, O_RDONLY | O_NOFOLLOW)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENXIO):  # a symlink, fifo or device
                    self._failed(path, e)
                    return None
            else:
                try:
                    st = sys.fstat(fd)
                    if stat.S_ISREG(st.st_mode):
                        self._entry(dfd, name, path, st, fd)
                        return None
                finally:
                    sys.close(fd)
        self._other(dfd, name, path, st)
        return None

    def _other(self, dfd: int, name: bytes, path: bytes, st: kernel.Stat | None) -> None:
        """Write a non-directory entry whatever its type, from its stat."""
        if st is None:
            try:
                st = self.sys.fstatat(dfd, name, AT_SYMLINK_NOFOLLOW)
            except OSError as e:
                self._failed(path, e)
                return
        if stat.S_ISDIR(st.st_mode):
            # not walked into: the other exporters of the walk took it for a file
            self._failed(path, OSError(errno.EUCLEAN, "directory entry of a file type leads to a "
                                       "directory; left out (damaged image)"))
            return
        self._entry(dfd, name, path, st)

    def _names(self, dfd: int, path: bytes, own: bool) -> list[Dirent]:
        """The entries of directory ``dfd``, sorted by name; errors reported when ``own``."""
        entries: list[Dirent] = []
        while True:
            try:
                batch = self.sys.getdents64(dfd, 1 << 16)
            except OSError as e:
                bad = getattr(e, "dirent_name", None)
                if bad is not None:
                    # one damaged entry (a name with '/' or NUL): report it, read on
                    if own:
                        self._failed(path, OSError(e.errno, f"invalid name {bad!r} left out"))
                    continue
                if own:
                    self._failed(path, e)
                break
            if not batch:
                break
            entries.extend(d for d in batch if d.d_name not in (b".", b".."))
        entries.sort(key=_by_name)
        return entries

    def _failed(self, path: bytes, e: OSError) -> None:
        where = os.fsdecode(path)
        if not self.keep_going:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno or errno.EIO), where) from e
        self.warn(f"{where}: {e.strerror or e}; left out")
        self.stats.skipped.append(where)

    # -- one entry -------------------------------------------------------------------------
    def _entry(self, dfd: int, name: bytes, path: bytes, st: kernel.Stat, fd: int = -1) -> None:
        """Write one entry; ``fd``, when given, is the regular file already open."""
        try:
            self._write_entry(dfd, name, path, st, fd)
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
                     fd: int) -> None:
        sys, w = self.sys, self.w
        mode = st.st_mode
        ftype = stat.S_IFMT(mode)
        if ftype == stat.S_IFSOCK:
            self.stats.sockets += 1
            self.warn(f"{os.fsdecode(path)}: socket left out (tar cannot store sockets)")
            return
        xattrs = self._xattrs(fd, b"") if fd >= 0 else self._xattrs(dfd, name)
        first = None
        if ftype != stat.S_IFDIR and st.st_nlink > 1:
            # a hard link: the inode's first name in the walk carries the data
            first = self._first.get((st.st_dev, st.st_ino), path)
            if first == path:
                first = None
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
        """The data regions of a file with holes, or None if it has none."""
        sys = self.sys
        regions = []
        pos = 0
        while pos < size:
            try:
                start = sys.lseek(fd, pos, SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            try:
                end = sys.lseek(fd, start, SEEK_HOLE)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                end = size
            regions.append((start, end - start))
            pos = end
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

