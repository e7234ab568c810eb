"""A tar writer on libarchive, with what libarchive-c's Python API lacks.

Every function used is bound here with ``ctypes`` (extended attributes, ACLs,
sparse maps, hard links and nanosecond times included), so that every entry
carries everything the image holds; libarchive-c is only the fallback that
finds the library. Errors become ``ArchiveWriteError`` with libarchive's message.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import mmap
import os
import platform
import stat
import struct
from collections.abc import Callable, Iterator
from ctypes import c_char_p, c_int, c_int64, c_long, c_longlong, c_size_t, c_uint, c_void_p
from typing import Any, Protocol

log = logging.getLogger(__name__)


def _load_libarchive() -> ctypes.CDLL:
    """The C library: ``$LIBARCHIVE`` as libarchive-c takes it, else its soname (a
    dlopen); only if that fails libarchive-c's own search, whose package import and
    ``ldconfig -p`` cost a tool's start-up some 30 ms."""
    path = os.environ.get("LIBARCHIVE")
    try:
        return ctypes.CDLL(path or "libarchive.so.13")
    except OSError:
        if path:
            raise
    from libarchive import ffi

    return ffi.libarchive  # type: ignore[no-any-return]


_lib = _load_libarchive()
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


BIG_BLOCK = 64 << 10
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
_write_set_bytes_per_block = _bind("write_set_bytes_per_block", [c_void_p, c_int], c_int)
_OPEN_CB = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p)
_WRITE_CB = ctypes.CFUNCTYPE(ctypes.c_ssize_t, c_void_p, c_void_p, c_void_p, c_size_t)
_write_open = _bind("write_open", [c_void_p, c_void_p, _OPEN_CB, _WRITE_CB, _OPEN_CB], c_int)
_write_open_memory = _bind("write_open_memory",
                           [c_void_p, c_void_p, c_size_t, ctypes.POINTER(c_size_t)], c_int)
_error_string = _bind("error_string", [c_void_p], c_char_p)
_errno = _bind("errno", [c_void_p], c_int)


def _setup(a: Any, prefix: str, name: str, what: str) -> int:
    """Call ``archive_<prefix><name>(a)``: a write format or filter."""
    try:
        f = _bind(prefix + name, [c_void_p], c_int)
    except AttributeError:
        raise ArchiveWriteError(f"the write {what} {name!r} is not available in this "
                                "libarchive") from None
    return f(a)  # type: ignore[no-any-return]


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
_copy_stat = _bind("entry_copy_stat", [c_void_p, c_void_p], None)
_xattr_add = _bind("entry_xattr_add_entry", [c_void_p, c_char_p, c_void_p, c_size_t], None)
_sparse_add = _bind("entry_sparse_add_entry", [c_void_p, c_int64, c_int64], None)
_acl_add = _bind("entry_acl_add_entry", [c_void_p, c_int, c_int, c_int, c_int, c_char_p], c_int)


# struct stat as the C library lays it out, with only the fields an entry takes from it
# (mode, uid, gid, size, atime, mtime, ctime: seconds and nanoseconds); the others are
# zero, as in an entry made field by field
_STAT_LAYOUTS = {
    "x86_64": "<24xIII12xq16xqqqqqq24x",
    "aarch64": "<16xI4xII16xq16xqqqqqq8x",
}


def _stat_struct() -> struct.Struct | None:
    """The ``struct stat`` of this machine, checked against the C library's fstat; None
    when unknown (entries are then described one field at a time)."""
    layout = _STAT_LAYOUTS.get(platform.machine())
    if layout is None:
        return None
    st = struct.Struct(layout)
    try:
        fstat = ctypes.CDLL(None, use_errno=True).fstat
    except (OSError, AttributeError):
        return None
    fstat.argtypes = [c_int, c_void_p]
    fstat.restype = c_int
    buf = ctypes.create_string_buffer(st.size)
    try:
        with open(__file__, "rb") as f:
            if fstat(f.fileno(), buf) != 0:
                return None
            ref = os.fstat(f.fileno())
    except OSError:
        return None
    got = st.unpack_from(buf.raw)
    want = (ref.st_mode, ref.st_uid, ref.st_gid, ref.st_size,
            *divmod(ref.st_atime_ns, 10**9), *divmod(ref.st_mtime_ns, 10**9),
            *divmod(ref.st_ctime_ns, 10**9))
    return st if got == want else None


_STAT = _stat_struct()


def compression_for(name: str) -> str | None:
    lower = name.lower()
    for suffix, filt in SUFFIXES:
        if lower.endswith(suffix):
            return filt
    return None


class _Writer:
    """A libarchive writer of format ``fmt`` to a host path, a file descriptor or (``out``
    None) memory: there the bytes go to ``spill`` as they come, with no blocking or padding,
    so that pieces of one stream written by several writers join into one archive."""

    CHUNK = 1 << 20
    # memory mode: entries are written by libarchive into this buffer (no call back into
    # Python per write); the bytes are handed on once SPILL are waiting, and the writer
    # starts again at the buffer's start between entries once it is half full. An entry
    # that would not fit goes through a writer that calls back with each write.
    MEMORY = 16 << 20
    SPILL = 1 << 20

    def __init__(self, out: str | int | None, fmt: str, compression: str | None = None,
                 spill: Callable[[memoryview], None] | None = None) -> None:
        self.format = fmt
        self._compression = compression
        self._entry = _entry_new()
        self._spill = spill
        self._mem: mmap.mmap | None = None
        self._a = None
        self._handles: list[Any] = []  # every libarchive writer made (memory mode: several)
        try:
            self._a = self._new_handle()
            if out is None:
                self._open_memory()
            # GNU tar pads the last block to the record size; so do we, unless
            # writing to a pipe, where padding to 512 bytes is enough.
            elif isinstance(out, int):
                _write_set_bytes_in_last_block(self._a, 1)
                self._big_blocks(out)
                self._check(_write_open_fd(self._a, out))
            else:
                self._big_blocks(out)
                self._check(_write_open_filename(self._a, out.encode()))
        except Exception as e:
            self._free()
            if isinstance(e, ArchiveWriteError):
                raise
            raise ArchiveWriteError(getattr(e, "msg", None) or str(e)) from None
        self._zeros = bytes(self.CHUNK)
        self._direct = -1  # memory mode: data bytes still to come of an entry sent directly

    def _new_handle(self) -> Any:
        """A libarchive writer of this format (and compression), not yet opened."""
        a = _write_new()
        if not a:
            raise ArchiveWriteError("cannot create an archive writer")
        self._handles.append(a)
        self._a = a  # for _check's messages
        self._check(_setup(a, "write_set_format_", FORMATS.get(self.format, self.format),
                           "format"))
        if self.format == "pax":
            # SCHILY.xattr.* only: GNU tar reads those, and warns about
            # every LIBARCHIVE.xattr.* duplicate libarchive adds by default
            self._check(_write_set_options(a, b"xattrheader=SCHILY"))
        if self._compression:
            self._check(_setup(a, "write_add_filter_", FILTERS[self._compression], "filter"))
        return a

    # -- memory mode ----------------------------------------------------------------------
    def _open_memory(self) -> None:
        self._mem = mmap.mmap(-1, self.MEMORY, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._memview = memoryview(self._mem)
        self._cmem = ctypes.c_char.from_buffer(self._mem)  # pins the buffer's address
        self._used = c_size_t(0)  # how far libarchive has written into the buffer
        self._sent = 0  # how far the bytes were handed on
        self._error: BaseException | None = None
        self._mem_a = self._a
        self._start_memory(self._mem_a)
        self._cb_a: Any = None  # the calling-back writer, made when an entry needs it
        self._xattr_bytes = 0

    def _start_memory(self, a: Any) -> None:
        """Open ``a`` on the buffer, from its start (every byte before was handed on)."""
        self._check(_write_set_bytes_per_block(a, 0))  # unblocked: bytes as they come
        self._check(_write_open_memory(a, ctypes.addressof(self._cmem), self.MEMORY,
                                       ctypes.byref(self._used)))
        self._used.value = 0
        self._sent = 0

    def _callback_handle(self) -> Any:
        if self._cb_a is None:
            a = self._new_handle()

            def opened(_a: Any, _client: Any) -> int:
                return ARCHIVE_OK

            def written(_a: Any, _client: Any, buff: int, length: int) -> int:
                try:
                    assert self._spill is not None
                    self._spill(memoryview(ctypes.string_at(buff, length)))
                    return length
                except BaseException as e:  # noqa: BLE001 - raised after libarchive returns
                    self._error = e
                    return ARCHIVE_FATAL

            self._callbacks = (_OPEN_CB(opened), _WRITE_CB(written), _OPEN_CB(opened))
            self._check(_write_set_bytes_per_block(a, 0))
            self._check(_write_open(a, None, *self._callbacks))
            self._cb_a = a
        return self._cb_a

    def _place(self, need: int) -> None:
        """Memory mode, before an entry of at most ``need`` bytes: the writer to take it."""
        if self._a is not self._mem_a:
            self._a = self._mem_a  # after an entry the other writer took
        if self._used.value + need > self.MEMORY or self._used.value > self.MEMORY // 2:
            self._restart()
        if need > self.MEMORY:
            self._a = self._callback_handle()

    def _restart(self) -> None:
        """Memory mode: hand on every byte, then go on with a fresh writer from the buffer's
        start (whatever entry the old one was in is dropped with it)."""
        self.flush()
        old = self._mem_a
        self._mem_a = self._a = self._new_handle()
        self._handles.remove(old)
        _write_fail(old)
        _write_free(old)
        self._start_memory(self._mem_a)

    def _big_blocks(self, out: str | int) -> None:
        """Write in 64 KiB blocks rather than tar's 10 KiB records (six times fewer system
        calls): the bytes are the same, as nothing but a device gets its last block padded.
        Tapes and other devices keep the records tar readers expect."""
        try:
            mode = os.fstat(out).st_mode if isinstance(out, int) else os.stat(out).st_mode
        except OSError:
            mode = stat.S_IFREG  # a file still to be made
        if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            self._check(_write_set_bytes_per_block(self._a, BIG_BLOCK))

    def flush(self) -> None:
        """Memory mode: hand every byte written so far to ``spill``."""
        if self._mem is not None:
            used = self._used.value
            if used > self._sent:
                assert self._spill is not None
                sent, self._sent = self._sent, used
                self._spill(self._memview[sent:used])

    def _room(self) -> None:
        if self._mem is not None and self._used.value - self._sent >= self.SPILL:
            self.flush()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        if self._direct >= 0:  # memory mode, the data of a big entry: straight out
            if n > self._direct:
                raise ArchiveWriteError(f"short write ({self._direct} of {n} bytes)")
            self._direct -= n
            assert self._spill is not None
            self._spill(data if isinstance(data, memoryview) else memoryview(data))
            return
        self._room()
        # libarchive reads the caller's buffer in place; a ctypes array type per length
        # would cost a new type for every file size met, so pass the first byte's address
        if isinstance(data, bytes):
            done = _write_data(self._a, data, n)
        else:
            if isinstance(data, memoryview) and data.readonly:
                data = bytearray(data)
            first = ctypes.c_char.from_buffer(data)  # holds the buffer while libarchive reads
            done = _write_data(self._a, ctypes.addressof(first), n)
            del first
        if done < 0:
            self._check(done)
        elif done != n:
            raise ArchiveWriteError(f"short write ({done} of {n} bytes)")

    def _check(self, rc: int) -> int:
        if self._mem is not None and self._error is not None:
            err, self._error = self._error, None
            raise err
        if rc < ARCHIVE_WARN:
            msg = _error_string(self._a)
            text = msg.decode("utf-8", "replace") if msg else f"error {rc}"
            err = _errno(self._a)
            if err == errno.EPIPE:
                raise BrokenPipeError(err, os.strerror(err))  # the reader went away
            if rc != ARCHIVE_FAILED and err > 0 and os.strerror(err) not in text:
                text += f": {os.strerror(err)}"  # "Write error" says too little
            raise ArchiveWriteError(text, fatal=rc != ARCHIVE_FAILED)
        if rc == ARCHIVE_WARN:
            msg = _error_string(self._a)
            log.warning("%s", msg.decode("utf-8", "replace") if msg else "warning")
        return rc

    def close(self) -> None:
        if self._a:
            try:
                self._check(_write_close(self._a))
            finally:
                self._free()

    def abort(self) -> None:
        """Give up: free the writer without writing the end-of-archive marker."""
        for a in self._handles:
            _write_fail(a)
        self._free()

    def _free(self) -> None:
        if self._entry:
            _entry_free(self._entry)
            self._entry = None
        for a in self._handles:
            _write_free(a)
        self._handles = []
        self._a = None


class TarWriter(_Writer):
    """Write entries to a tar archive (a host path, a file descriptor, or memory).

    In memory mode the data of an entry of DIRECT bytes or more (not sparse) does not go
    through libarchive: once libarchive has written its header, the data is handed to
    ``spill`` as it comes and padded to a 512-byte record here, which is what libarchive
    would have written, without copying it into the buffer first."""

    DIRECT = 64 << 10
    _size = 0
    _sparse = False
    _stat: Any = None  # a struct stat for entry_copy_stat, when this machine's is known

    def begin(self, path: bytes, mode: int, uid: int, gid: int, size: int,
              mtime_ns: int, atime_ns: int | None = None, ctime_ns: int | None = None,
              btime_ns: int | None = None) -> None:
        """Start describing an entry (pathname, mode with type, owner, size, times)."""
        e = self._entry
        _entry_clear(e)
        self._need = size + 3 * len(path) + (256 << 10)  # the most it takes, header included
        self._size = size
        self._sparse = False
        _set_pathname(e, path)
        if atime_ns is not None and ctime_ns is not None and _STAT is not None:
            # the usual entry: mode, owner, size and the three times in one call
            buf = self._stat
            if buf is None:
                buf = self._stat = ctypes.create_string_buffer(_STAT.size)
            if mtime_ns >= 0 and atime_ns >= 0 and ctime_ns >= 0:
                _STAT.pack_into(buf, 0, mode, uid, gid, size,
                                atime_ns // 1_000_000_000, atime_ns % 1_000_000_000,
                                mtime_ns // 1_000_000_000, mtime_ns % 1_000_000_000,
                                ctime_ns // 1_000_000_000, ctime_ns % 1_000_000_000)
            else:
                split = self._split
                _STAT.pack_into(buf, 0, mode, uid, gid, size, *split(atime_ns),
                                *split(mtime_ns), *split(ctime_ns))
            _copy_stat(e, buf)
            if btime_ns is not None:
                _set_birthtime(e, *self._split(btime_ns))
            return
        _set_mode(e, mode)
        if uid:  # a cleared entry's owner is 0 already
            _set_uid(e, uid)
        if gid:
            _set_gid(e, gid)
        _set_size(e, size)
        split = self._split
        if mtime_ns >= 0:
            _set_mtime(e, mtime_ns // 1_000_000_000, mtime_ns % 1_000_000_000)
        else:
            _set_mtime(e, *split(mtime_ns))
        if atime_ns is not None:
            _set_atime(e, *split(atime_ns))
        if ctime_ns is not None:
            _set_ctime(e, *split(ctime_ns))
        if btime_ns is not None:
            _set_birthtime(e, *split(btime_ns))

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
        self._need -= self._size
        self._size = 0

    def set_rdev(self, major: int, minor: int) -> None:
        _set_rdevmajor(self._entry, major)
        _set_rdevminor(self._entry, minor)

    def add_xattr(self, name: bytes, value: bytes) -> None:
        self._need += len(name) + len(value) + 64
        _xattr_add(self._entry, name, value, len(value))

    def add_acl(self, acl_type: int, entries: list[tuple[int, int, int]]) -> None:
        """``entries`` in Linux's form: (tag, perm, id)."""
        self._need += 64 * len(entries)  # the text form, twice at most
        for tag, perm, ident in entries:
            ltag = LINUX_ACL_TAGS.get(tag)
            if ltag is None:
                continue
            qual = ident if tag in (0x02, 0x08) else -1
            _acl_add(self._entry, acl_type, perm & 7, ltag, qual, None)

    def add_sparse(self, offset: int, length: int) -> None:
        self._need += 48  # the map's text
        self._sparse = True
        _sparse_add(self._entry, offset, length)

    def write_header(self) -> None:
        direct = False
        if self._mem is not None:
            direct = self._size >= self.DIRECT and not self._sparse
            self._place(self._need - self._size if direct else self._need)
        self._room()
        self._check(_write_header(self._a, self._entry))
        if direct:
            # the header is out; the data is ours to send: libarchive's writer, still in
            # this entry, is dropped for a fresh one
            self._restart()
            self._direct = self._size

    def write_zeros(self, n: int) -> None:
        """Feed ``n`` zero bytes (a hole of a sparse entry: libarchive skips them)."""
        z = self._zeros
        while n:
            k = min(n, len(z))
            self.write(z if k == len(z) else z[:k])
            n -= k

    def finish_entry(self) -> None:
        if self._direct >= 0:
            # as libarchive ends an entry: zeros for data not written, then the padding
            left = self._direct + (-self._size % 512)
            self._direct = -1
            assert self._spill is not None
            zeros = memoryview(self._zeros)
            while left:
                k = min(left, len(zeros))
                self._spill(zeros[:k])
                left -= k
            return
        self._check(_write_finish_entry(self._a))



class RawWriter(_Writer):
    """Bytes that are already a tar stream, written through libarchive's compression and
    blocking (its "raw" format), exactly as a TarWriter to the same place would end."""

    def __init__(self, out: str | int, compression: str | None = None) -> None:
        super().__init__(out, "raw", compression)
        e = self._entry
        _set_pathname(e, b"archive.tar")
        _set_mode(e, AE_IFREG | 0o644)
        self._check(_write_header(self._a, e))


class Closing(Protocol):
    def close(self) -> None: ...

    def abort(self) -> None: ...


@contextlib.contextmanager
def finishing(writer: Closing, label: str) -> Iterator[None]:
    """Close ``writer`` when the block ends well, abort it otherwise; libarchive's errors
    become one line naming the archive (``label``)."""
    from ..common.cli import ToolError

    ok = False
    try:
        yield
        writer.close()
        ok = True
    except ArchiveWriteError as e:
        raise ToolError(f"{label}: {e}") from None
    finally:
        if not ok:
            writer.abort()
