"""A tar writer on libarchive, with what libarchive-c's Python API lacks.

libarchive-c binds the basics; extended attributes, ACLs, sparse maps, hard
links and nanosecond times are bound here through its ffi (``ctypes``) so
that every entry carries everything the image holds. Errors become
``ArchiveWriteError`` with libarchive's message.
"""

from __future__ import annotations

import ctypes
import logging
from ctypes import c_char_p, c_int, c_int64, c_long, c_longlong, c_size_t, c_uint, c_void_p
from typing import Any

from libarchive import ffi

log = logging.getLogger(__name__)

_lib = ffi.libarchive
ARCHIVE_OK = 0
ARCHIVE_WARN = -20

AE_IFREG = 0o100000
AE_IFLNK = 0o120000
AE_IFSOCK = 0o140000
AE_IFCHR = 0o020000
AE_IFBLK = 0o060000
AE_IFDIR = 0o040000
AE_IFIFO = 0o010000

ACL_TYPE_ACCESS = 0x00000100
ACL_TYPE_DEFAULT = 0x00000200
ACL_USER = 10001
ACL_USER_OBJ = 10002
ACL_GROUP = 10003
ACL_GROUP_OBJ = 10004
ACL_MASK = 10005
ACL_OTHER = 10006
# Linux ACL tag -> libarchive tag
LINUX_ACL_TAGS = {0x01: ACL_USER_OBJ, 0x02: ACL_USER, 0x04: ACL_GROUP_OBJ, 0x08: ACL_GROUP,
                  0x10: ACL_MASK, 0x20: ACL_OTHER}

FORMATS = {"pax": "pax", "gnu": "gnutar", "ustar": "ustar"}
FILTERS = {"gzip": "gzip", "xz": "xz", "zstd": "zstd", "bzip2": "bzip2"}
SUFFIXES = ((".tar.gz", "gzip"), (".tgz", "gzip"), (".tar.xz", "xz"), (".txz", "xz"),
            (".tar.zst", "zstd"), (".tzst", "zstd"), (".tar.bz2", "bzip2"), (".tbz2", "bzip2"))


ARCHIVE_FAILED = -25  # this entry failed; the archive goes on
ARCHIVE_FATAL = -30


class ArchiveWriteError(Exception):
    """libarchive refused; ``fatal`` is False when only the current entry failed."""

    def __init__(self, message: str, fatal: bool = True) -> None:
        super().__init__(message)
        self.fatal = fatal


def _bind(name: str, argtypes: list[Any], restype: Any) -> Any:
    # a function object of our own: libarchive-c's carry its errcheck
    f = _lib["archive_" + name]
    f.argtypes = argtypes
    f.restype = restype
    return f


_write_new = _bind("write_new", [], c_void_p)
_write_free = _bind("write_free", [c_void_p], c_int)
_write_close = _bind("write_close", [c_void_p], c_int)
_write_fail = _bind("write_fail", [c_void_p], c_int)
_write_set_options = _bind("write_set_options", [c_void_p, c_char_p], c_int)
_write_open_filename = _bind("write_open_filename", [c_void_p, c_char_p], c_int)
_write_open_fd = _bind("write_open_fd", [c_void_p, c_int], c_int)
_write_header = _bind("write_header", [c_void_p, c_void_p], c_int)
_write_data = _bind("write_data", [c_void_p, c_void_p, c_size_t], ctypes.c_ssize_t)
_write_finish_entry = _bind("write_finish_entry", [c_void_p], c_int)
_write_set_bytes_in_last_block = _bind("write_set_bytes_in_last_block", [c_void_p, c_int], c_int)
_error_string = _bind("error_string", [c_void_p], c_char_p)

_entry_new = _bind("entry_new", [], c_void_p)
_entry_free = _bind("entry_free", [c_void_p], None)
_entry_clear = _bind("entry_clear", [c_void_p], c_void_p)
_set_pathname = _bind("entry_copy_pathname", [c_void_p, c_char_p], None)
_set_size = _bind("entry_set_size", [c_void_p, c_longlong], None)
_set_mode = _bind("entry_set_mode", [c_void_p, c_uint], None)
_set_uid = _bind("entry_set_uid", [c_void_p, c_longlong], None)
_set_gid = _bind("entry_set_gid", [c_void_p, c_longlong], None)
_set_mtime = _bind("entry_set_mtime", [c_void_p, c_int64, c_long], None)
_set_atime = _bind("entry_set_atime", [c_void_p, c_int64, c_long], None)
_set_ctime = _bind("entry_set_ctime", [c_void_p, c_int64, c_long], None)
_set_birthtime = _bind("entry_set_birthtime", [c_void_p, c_int64, c_long], None)
_set_rdevmajor = _bind("entry_set_rdevmajor", [c_void_p, c_uint], None)
_set_rdevminor = _bind("entry_set_rdevminor", [c_void_p, c_uint], None)
_set_symlink = _bind("entry_copy_symlink", [c_void_p, c_char_p], None)
_set_hardlink = _bind("entry_copy_hardlink", [c_void_p, c_char_p], None)
_set_nlink = _bind("entry_set_nlink", [c_void_p, c_uint], None)
_set_ino = _bind("entry_set_ino64", [c_void_p, c_int64], None)
_set_dev = _bind("entry_set_dev", [c_void_p, c_uint], None)
_xattr_add = _bind("entry_xattr_add_entry", [c_void_p, c_char_p, c_void_p, c_size_t], None)
_sparse_add = _bind("entry_sparse_add_entry", [c_void_p, c_int64, c_int64], None)
_acl_add = _bind("entry_acl_add_entry", [c_void_p, c_int, c_int, c_int, c_int, c_char_p], c_int)


def compression_for(name: str) -> str | None:
    lower = name.lower()
    for suffix, filt in SUFFIXES:
        if lower.endswith(suffix):
            return filt
    return None


class TarWriter:
    """Write entries to a tar archive (a host path, or a file descriptor)."""

    CHUNK = 1 << 20

    def __init__(self, out: str | int, fmt: str = "pax", compression: str | None = None) -> None:
        self.format = fmt
        self._a = _write_new()
        if not self._a:
            raise ArchiveWriteError("cannot create an archive writer")
        self._entry = _entry_new()
        try:
            ffi.get_write_format_function(FORMATS[fmt])(self._a)
            if fmt == "pax":
                # SCHILY.xattr.* only: GNU tar reads those, and warns about
                # every LIBARCHIVE.xattr.* duplicate libarchive adds by default
                self._check(_write_set_options(self._a, b"xattrheader=SCHILY"))
            if compression:
                ffi.get_write_filter_function(FILTERS[compression])(self._a)
            # GNU tar pads the last block to the record size; so do we, unless
            # writing to a pipe, where padding to 512 bytes is enough.
            if isinstance(out, int):
                _write_set_bytes_in_last_block(self._a, 1)
                self._check(_write_open_fd(self._a, out))
            else:
                self._check(_write_open_filename(self._a, out.encode()))
        except Exception as e:
            self._free()
            if isinstance(e, ArchiveWriteError):
                raise
            raise ArchiveWriteError(getattr(e, "msg", None) or str(e)) from None
        self._zeros = bytes(self.CHUNK)

    def _check(self, rc: int) -> int:
        if rc < ARCHIVE_WARN:
            msg = _error_string(self._a)
            raise ArchiveWriteError(msg.decode("utf-8", "replace") if msg else f"error {rc}",
                                    fatal=rc != ARCHIVE_FAILED)
        if rc == ARCHIVE_WARN:
            msg = _error_string(self._a)
            log.warning("%s", msg.decode("utf-8", "replace") if msg else "warning")
        return rc

    def begin(self, path: bytes, mode: int, uid: int, gid: int, size: int,
              mtime_ns: int, atime_ns: int | None = None, ctime_ns: int | None = None,
              btime_ns: int | None = None) -> None:
        """Start describing an entry (pathname, mode with type, owner, size, times)."""
        e = self._entry
        _entry_clear(e)
        _set_pathname(e, path)
        _set_mode(e, mode)
        _set_uid(e, uid)
        _set_gid(e, gid)
        _set_size(e, size)
        _set_mtime(e, *self._split(mtime_ns))
        if atime_ns is not None:
            _set_atime(e, *self._split(atime_ns))
        if ctime_ns is not None:
            _set_ctime(e, *self._split(ctime_ns))
        if btime_ns is not None:
            _set_birthtime(e, *self._split(btime_ns))

    def _split(self, ns: int) -> tuple[int, int]:
        """(seconds, nanoseconds) as libarchive wants them.

        libarchive's pax writer prints a time as "-" + |sec| + "." + nsec, which
        readers take as -(|sec| + nsec/1e9). For a time before 1970 with a
        fraction that is off by up to two seconds, so hand it the pair that
        prints right: (sec + 1, 1e9 - nsec).
        """
        sec, nsec = divmod(ns, 1_000_000_000)
        if sec < 0 and nsec and self.format == "pax":
            return sec + 1, 1_000_000_000 - nsec
        return sec, nsec

    def set_symlink(self, target: bytes) -> None:
        _set_symlink(self._entry, target)

    def set_hardlink(self, target: bytes) -> None:
        _set_hardlink(self._entry, target)
        _set_size(self._entry, 0)

    def set_rdev(self, major: int, minor: int) -> None:
        _set_rdevmajor(self._entry, major)
        _set_rdevminor(self._entry, minor)

    def add_xattr(self, name: bytes, value: bytes) -> None:
        _xattr_add(self._entry, name, value, len(value))

    def add_acl(self, acl_type: int, entries: list[tuple[int, int, int]]) -> None:
        """``entries`` in Linux's form: (tag, perm, id)."""
        for tag, perm, ident in entries:
            ltag = LINUX_ACL_TAGS.get(tag)
            if ltag is None:
                continue
            qual = ident if tag in (0x02, 0x08) else -1
            _acl_add(self._entry, acl_type, perm & 7, ltag, qual, None)

    def add_sparse(self, offset: int, length: int) -> None:
        _sparse_add(self._entry, offset, length)

    def write_header(self) -> None:
        self._check(_write_header(self._a, self._entry))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        buf: Any = data
        if isinstance(data, bytearray):
            buf = (ctypes.c_char * n).from_buffer(data)
        elif isinstance(data, memoryview):
            buf = (ctypes.c_char * n).from_buffer_copy(data)
        done = _write_data(self._a, buf, n)
        if done < 0:
            self._check(done)
        elif done != n:
            raise ArchiveWriteError(f"short write ({done} of {n} bytes)")

    def write_zeros(self, n: int) -> None:
        """Feed ``n`` zero bytes (a hole of a sparse entry: libarchive skips them)."""
        z = self._zeros
        while n:
            k = min(n, len(z))
            self.write(z if k == len(z) else z[:k])
            n -= k

    def finish_entry(self) -> None:
        self._check(_write_finish_entry(self._a))

    def close(self) -> None:
        if self._a:
            try:
                self._check(_write_close(self._a))
            finally:
                self._free()

    def abort(self) -> None:
        """Give up: free the writer without writing the end-of-archive marker."""
        if self._a:
            _write_fail(self._a)
        self._free()

    def _free(self) -> None:
        if self._entry:
            _entry_free(self._entry)
            self._entry = None
        if self._a:
            _write_free(self._a)
            self._a = None
