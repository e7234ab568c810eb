"""Host backends behind a virtio-blk device: where the image bytes really live.

``RawFile`` serves a raw image file. It opens the file read-only when the disk
is read-only (so no write can reach it, whatever happens above), and maps the
device operations onto host calls that release the GIL: ``preadv``/``pwritev``
for data, ``fdatasync`` for FLUSH, ``fallocate(PUNCH_HOLE)`` for DISCARD.

While attached, the image is locked as QEMU locks its images (and as Linux
opens a mounted block device exclusively): a shared ``flock`` for a read-only
disk, an exclusive one for a writable disk. A second writer, or a reader
beside a writer, would see the other's metadata half written and write over
it; it gets EBUSY instead.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import time
from collections.abc import Sequence
from typing import Protocol

_libc = ctypes.CDLL(None, use_errno=True)  # the C library this Python runs on
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_ZEROS = bytes(1 << 20)


class Backend(Protocol):
    size: int
    readonly: bool
    serial: bytes

    def preadv(self, buffers: Sequence[memoryview], offset: int) -> int: ...
    def pwritev(self, buffers: Sequence[memoryview], offset: int) -> int: ...
    def flush(self) -> None: ...
    def discard(self, offset: int, length: int) -> None: ...
    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None: ...
    def close(self) -> None: ...


class RawFile:
    """A raw disk image in a host file (or a host block device)."""

    def __init__(self, path: str, readonly: bool = False, lock_wait: float = 0.0) -> None:
        """Open and lock the image; EBUSY if another holder keeps the lock for longer than
        ``lock_wait`` seconds."""
        self.path = path
        self.readonly = readonly
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        self.fd = os.open(path, flags)
        try:
            self._lock(lock_wait)
            st = os.fstat(self.fd)
            if stat.S_ISBLK(st.st_mode):
                self.size = os.lseek(self.fd, 0, os.SEEK_END)
            elif stat.S_ISREG(st.st_mode):
                self.size = st.st_size
            else:
                raise OSError(errno.EINVAL, "not a regular file or block device", path)
        except BaseException:
            os.close(self.fd)
            raise
        self.serial = os.path.basename(path).encode("utf-8", "replace")[:20]
        self.flushes = 0  # how many FLUSH requests reached fdatasync

    def _lock(self, wait: float) -> None:
        op = (fcntl.LOCK_SH if self.readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, op)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OSError(errno.EBUSY, "in use by another process (locked)",
                                  self.path) from None
                time.sleep(0.05)
            except OSError as e:
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    return  # a host filesystem without locks: nothing to keep us out
                raise

    def preadv(self, buffers: Sequence[memoryview], offset: int) -> int:
        total = sum(len(b) for b in buffers)
        done = os.preadv(self.fd, buffers, offset)
        if done < total:
            # Short read at the end of the file: the rest reads as zeros,
            # as a loop device pads a partial last sector.
            self._zero_tail(buffers, done)
        return total

    @staticmethod
    def _zero_tail(buffers: Sequence[memoryview], done: int) -> None:
        for b in buffers:
            n = len(b)
            if done >= n:
                done -= n
                continue
            b[done:] = bytes(n - done)
            done = 0

    def pwritev(self, buffers: Sequence[memoryview], offset: int) -> int:
        total = sum(len(b) for b in buffers)
        done = 0
        while done < total:
            n = os.pwritev(self.fd, buffers, offset + done)
            if n <= 0:
                raise OSError(errno.EIO, "short write", self.path)
            done += n
            if done < total:  # rare: rebuild the remaining buffer list
                rest, skip = [], done
                for b in buffers:
                    if skip >= len(b):
                        skip -= len(b)
                        continue
                    rest.append(b[skip:])
                    skip = 0
                buffers = rest
                offset, total, done = offset + done, total - done, 0
        return total

    def flush(self) -> None:
        self.flushes += 1
        os.fdatasync(self.fd)

    def discard(self, offset: int, length: int) -> None:
        if _fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
            err = ctypes.get_errno()
            if err != errno.EOPNOTSUPP:
                raise OSError(err, os.strerror(err), self.path)
            # No hole punching on this host filesystem: discard is advisory.

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        if unmap:
            if _fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
                return
        elif _fallocate(self.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
            return
        zeros = memoryview(_ZEROS)
        while length:
            n = min(length, len(zeros))
            os.pwrite(self.fd, zeros[:n], offset)
            offset += n
            length -= n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
