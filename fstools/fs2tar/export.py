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
    O_DIRECTORY,
    O_NOFOLLOW,
    O_RDONLY,
    SEEK_DATA,
    SEEK_HOLE,
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
                 warn: Callable[[str], None] = log.warning, birthtime: bool = False) -> None:
        self.sys = sys
        self.root = root
        self.w = writer
        self.keep_going = keep_going
        self.verbose = verbose
        self.selinux_out = selinux_out
        self.progress = progress
        self.warn = warn
        self.stats = Stats()
        self._links: dict[tuple[int, int], bytes] = {}
        self._xattrs_ok = writer.format == "pax"
        self.birthtime = birthtime

    # -- the walk ------------------------------------------------------------------------
    def run(self) -> Stats:
        sys = self.sys
        rootfd = sys.open(self.root, O_RDONLY | O_DIRECTORY)
        try:
            st = sys.fstat(rootfd)
            dirs = {(st.st_dev, st.st_ino)}  # a directory met twice: a loop in a damaged image
            self._entry(rootfd, b"", b"./", st)
            stack: list[tuple[int, bytes, list[bytes], int]] = [
                (rootfd, b"./", self._names(rootfd, b"./"), 0)]
            while stack:
                dfd, prefix, names, i = stack[-1]
                if i == len(names):
                    stack.pop()
                    if dfd != rootfd:
                        sys.close(dfd)
                    continue
                stack[-1] = (dfd, prefix, names, i + 1)
                name = names[i]
                path = prefix + name
                try:
                    st = sys.fstatat(dfd, name, AT_SYMLINK_NOFOLLOW)
                except OSError as e:
                    self._failed(path, e)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in dirs:
                        self._failed(path, OSError(errno.ELOOP, "directory loop: this directory "
                                                   "is already in the archive (damaged image)"))
                        continue
                    dirs.add((st.st_dev, st.st_ino))
                    try:
                        sub = sys.openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
                    except OSError as e:
                        self._failed(path, e)
                        continue
                    try:
                        self._entry(sub, b"", path + b"/", st)
                        stack.append((sub, path + b"/", self._names(sub, path + b"/"), 0))
                    except BaseException:
                        sys.close(sub)
                        raise
                else:
                    self._entry(dfd, name, path, st)
        finally:
            sys.close(rootfd)
        return self.stats

    def _names(self, dfd: int, path: bytes) -> list[bytes]:
        names: list[bytes] = []
        while True:
            try:
                batch = self.sys.getdents64(dfd, 1 << 16)
            except OSError as e:
                bad = getattr(e, "dirent_name", None)
                if bad is not None:
                    # one damaged entry (a name with '/' or NUL): report it, read on
                    self._failed(path, OSError(e.errno, f"invalid name {bad!r} left out"))
                    continue
                self._failed(path, e)
                break
            if not batch:
                break
            names.extend(d.d_name for d in batch if d.d_name not in (b".", b".."))
        names.sort()
        return names

    def _failed(self, path: bytes, e: OSError) -> None:
        where = os.fsdecode(path)
        if not self.keep_going:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno or errno.EIO), where) from e
        self.warn(f"{where}: {e.strerror or e}; left out")
        self.stats.skipped.append(where)

    # -- one entry -------------------------------------------------------------------------
    def _entry(self, dfd: int, name: bytes, path: bytes, st: kernel.Stat) -> None:
        try:
            self._write_entry(dfd, name, path, st)
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

    def _write_entry(self, dfd: int, name: bytes, path: bytes, st: kernel.Stat) -> None:
        sys, w = self.sys, self.w
        mode = st.st_mode
        ftype = stat.S_IFMT(mode)
        if ftype == stat.S_IFSOCK:
            self.stats.sockets += 1
            self.warn(f"{os.fsdecode(path)}: socket left out (tar cannot store sockets)")
            return
        xattrs = self._xattrs(dfd, name)
        link_key = (st.st_dev, st.st_ino)
        first = self._links.get(link_key) if ftype != stat.S_IFDIR and st.st_nlink > 1 else None
        size = st.st_size if ftype == stat.S_IFREG and first is None else 0
        data: bytes | None = None
        fd = -1
        if ftype == stat.S_IFREG and first is None:
            fd = sys.openat(dfd, name, O_RDONLY | O_NOFOLLOW)
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
            if fd >= 0:
                sys.close(fd)
        if ftype != stat.S_IFDIR and st.st_nlink > 1 and first is None:
            self._links[link_key] = path
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
    def _read_all(self, fd: int, size: int, path: bytes) -> bytes:
        chunks = []
        got = 0
        while got < size:
            chunk = self.sys.pread64(fd, min(READ_CHUNK, size - got), got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got != size:
            raise OSError(errno.EIO, f"file shrank to {got} of {size} bytes while read",
                          os.fsdecode(path))
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

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
                    chunk = sys.pread64(fd, min(READ_CHUNK, end - pos), pos)
                    if not chunk:
                        raise OSError(errno.EIO, "file shorter than its size", os.fsdecode(path))
                    w.write(chunk)
                    pos += len(chunk)
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

