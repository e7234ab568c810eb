"""Reading the source tree ahead, in a second process: cptofs's host side on the other core.

Copying a tree of small files into an image, the one Python thread that runs the
kernel also made seven host calls per file (lstat, open, flistxattr, two lseeks,
pread, close): a fifth of its time. ``ReadAheadHost`` hands them to a helper process,
started for each directory the engine walks (``ReadAhead`` here,
``ReadAheadHost`` in endpoint.py). The helper walks the same tree in the
order the engine will (each directory's names sorted, a directory's entries right
after it: the order of the entries' paths as tuples of names) and sends, for each
entry, what the engine will ask of it: its lstat, its xattrs, a directory's names, a
symlink's target, a small regular file's data regions and their bytes. The engine's
calls are answered from that stream.

An answer is only ever one the engine could have got itself a moment earlier. What
the helper could not read, or did not (an error, a file over MAX_DATA, a file that
changed while it was read, a tree deeper than DEPTH, a directory seen twice), it
leaves out, and the engine's call goes to the host as before, errors and all. The
helper only reads, as the same user with the same O_NOATIME, and it is at most a
socket buffer ahead: SEND_BUFFER where it may (root, or net.core.wmem_max that large),
else Linux's default of about 200 KB, with which the copy caught up with it at stretches
of big files and waited for it some 900 times in a 45,000-file tree (0.3 s) instead of
a dozen. Should it fail to start or die, the copy goes on without it.
"""

from __future__ import annotations

import logging
import marshal
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

# the helper runs with the standard library and these alone (no kernel: it starts fast)
from ..common.hostfs import DIR_FLAGS, host_xattrs, list_dir, open_read
from ..common.regions import data_regions

log = logging.getLogger("cptofs")

MAX_DATA = 1 << 20       # regular files up to this size are read ahead whole
BATCH_RECORDS = 256      # entries per message (the first messages are smaller)
BATCH_BYTES = 1 << 20    # file data per message
DEPTH = 48               # directories the helper holds open; deeper ones the engine reads
SEND_BUFFER = 8 << 20    # how far ahead of the engine the helper may read, at most
_SO_SNDBUFFORCE = 32     # Linux's: SO_SNDBUF past net.core.wmem_max (CAP_NET_ADMIN)
# a message: the records' length, the file data's length, the records (marshal), the data
_HEAD = struct.Struct("<QQ")

Key = tuple[bytes, ...]
# (key, stat fields, xattrs, extra, data): extra is a directory's names, a symlink's target
# or a regular file's [(start, stop, where)] data regions, the bytes of a region being
# data[where:where + stop - start]; None where the engine must ask the host. ``data`` is
# the file data of the record's message (the helper sends records without it).
Record = tuple[Any, ...]


class HostStat(NamedTuple):
    """The fields of a host lstat the engine uses (``StatLike``)."""

    st_mode: int
    st_ino: int
    st_dev: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_rdev: int
    st_atime_ns: int
    st_mtime_ns: int


# ---------------------------------------------------------------------------- the helper
def _read_file(dfd: int, name: bytes, st: os.stat_result
               ) -> tuple[list[tuple[bytes, bytes]] | None, list[tuple[int, int, bytes]] | None]:
    fd = open_read(dfd, name)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino, now.st_size) != (st.st_dev, st.st_ino, st.st_size):
            return None, None  # replaced or changed since the lstat
        xattrs = host_xattrs(fd, b"")
        regions = []
        for start, stop in data_regions(os.lseek, fd, st.st_size):
            data = os.pread(fd, stop - start, start)
            if len(data) != stop - start:
                return xattrs, None  # shrank meanwhile: the engine finds out itself
            regions.append((start, stop, data))
        return xattrs, regions
    finally:
        os.close(fd)


class _Walker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.batch: list[Record] = []
        self.blobs: list[bytes] = []  # the file data of the batch, in order
        self.size = 0
        self.limit = 8  # small first messages: the engine waits for the first one
        self.seen: set[tuple[int, int]] = set()

    def emit(self, rec: Record, nbytes: int) -> None:
        self.batch.append(rec)
        self.size += nbytes
        if len(self.batch) >= self.limit or self.size >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            # the file data goes after the records, not inside them: the engine hands its
            # slices of the one message to the kernel, never copying a file's bytes again
            meta = marshal.dumps(self.batch)
            self.sock.sendall(b"".join([_HEAD.pack(len(meta), self.size), meta, *self.blobs]))
            self.batch = []
            self.blobs = []
            self.size = 0
            self.limit = min(self.limit * 2, BATCH_RECORDS)

    def entry(self, dfd: int, name: bytes, key: Key, depth: int) -> tuple[int, list[bytes]] | None:
        """Send the record of ``name`` in ``dfd``; a directory to go into: (its fd, names)."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False) if name else os.fstat(dfd)
        except OSError:
            return None  # no record: the engine asks the host, and gets the error
        fields = (st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid,
                  st.st_size, st.st_rdev, st.st_atime_ns, st.st_mtime_ns)
        fmt = stat.S_IFMT(st.st_mode)
        xattrs = None
        extra: object = None
        sub = None
        nbytes = 0
        if fmt == stat.S_IFREG:
            if st.st_size <= MAX_DATA:
                try:
                    xattrs, regions = _read_file(dfd, name, st)
                except OSError:
                    regions = None
                if regions is not None:
                    spans: list[tuple[int, int, int]] = []
                    where = self.size
                    for start, stop, data in regions:
                        spans.append((start, stop, where))
                        self.blobs.append(data)
                        where += len(data)
                    extra, nbytes = spans, where - self.size
        else:
            try:
                xattrs = host_xattrs(dfd, name)
            except OSError:
                pass
            if fmt == stat.S_IFLNK:
                try:
                    extra = os.readlink(name, dir_fd=dfd)
                except OSError:
                    pass
            elif fmt == stat.S_IFDIR and depth < DEPTH and (st.st_dev, st.st_ino) not in self.seen:
                self.seen.add((st.st_dev, st.st_ino))
                try:
                    fd = os.open(name or b".", DIR_FLAGS, dir_fd=dfd)
                except OSError:
                    fd = -1
                if fd >= 0:
                    try:
                        names = list_dir(fd)
                    except OSError:
                        os.close(fd)
                    else:
                        extra, sub = names, (fd, names)
        self.emit((key, fields, xattrs, extra), nbytes)
        return sub

    def walk(self, root: int, name: bytes) -> None:
        stack: list[tuple[int, Iterator[bytes], Key]] = []
        sub = self.entry(root, name, (name,), 0)
        if sub is not None:
            stack.append((sub[0], iter(sub[1]), (name,)))
        while stack:
            fd, names, prefix = stack[-1]
            child = next(names, None)
            if child is None:
                os.close(fd)
                stack.pop()
                continue
            key = (*prefix, child)
            sub = self.entry(fd, child, key, len(stack))
            if sub is not None:
                stack.append((sub[0], iter(sub[1]), key))
        self.flush()


def serve(sock_fd: int) -> None:
    """The helper: receive the directory and name to walk, send the records, end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the tool stops it (Ctrl-C reaches both)
    sock = socket.socket(fileno=sock_fd)
    for option in (_SO_SNDBUFFORCE, socket.SO_SNDBUF):  # (the second is capped by wmem_max)
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SEND_BUFFER)
            break
        except OSError:
            continue
    msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    if len(fds) != 1 or not msg.startswith(b"W"):
        return
    try:
        _Walker(sock).walk(fds[0], msg[1:])
    except (BrokenPipeError, ConnectionResetError):
        pass  # the walk is over for the engine


# ---------------------------------------------------------------------------- the tool's side
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); " \
        "from fstools.cptofs.readahead import serve; serve(int(sys.argv[2]))"


class ReadAhead:
    """The helper process of one walk and the records it has sent."""

    def __init__(self, dfd: int, name: bytes) -> None:
        if not sys.executable:
            raise OSError("no interpreter to start the helper with")
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # -I -S: the standard library and this package only, whatever the environment
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, here, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.records: list[Record] = []
        self.data = memoryview(b"")
        self.i = 0
        self.cur: Record | None = None
        self.answered = 0
        try:
            socket.send_fds(ours, [b"W" + name], [dfd])
        except OSError:
            self.close()
            raise

    def _recv(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes (> 0), as one bytes object; None at the end of the stream."""
        data = self.sock.recv(n, socket.MSG_WAITALL)
        if len(data) < n:  # a signal came, or the helper is gone
            parts, got = [data], len(data)
            while got < n:
                more = self.sock.recv(n - got, socket.MSG_WAITALL)
                if not more:
                    return None
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def _fill(self) -> bool:
        if self.sock.fileno() < 0:
            return False
        try:
            head = self._recv(_HEAD.size)
            if head is not None:
                nmeta, ndata = _HEAD.unpack(head)
                payload = self._recv(nmeta + ndata)
            else:
                payload = None
        except OSError:
            payload = None
        if payload is None:  # the walk is over, or the helper died: the host answers the rest
            self.sock.close()
            return False
        view = memoryview(payload)
        self.records = marshal.loads(view[:nmeta])
        self.data = view[nmeta:]  # (bytes underneath: the kernel keeps slices, no copies)
        self.i = 0
        return True

    def find(self, key: Key) -> Record | None:
        """The record of ``key``, or None when the helper sent none: records come in the
        engine's order, so those before ``key`` are of entries the engine left out."""
        cur = self.cur
        if cur is not None and cur[0] == key:
            return cur
        while True:
            records, i = self.records, self.i
            while i < len(records):
                rec = records[i]
                k = rec[0]
                if k == key:
                    self.i = i + 1
                    self.cur = rec = (k, HostStat(*rec[1]), rec[2], rec[3], self.data)
                    self.answered += 1
                    return rec
                if k > key:
                    self.i = i
                    return None
                i += 1
            self.i = i
            if not self._fill():
                return None

    def close(self) -> None:
        self.sock.close()
        self.proc.kill()  # it only reads: nothing to finish
        status = self.proc.wait()
        if status not in (0, -signal.SIGKILL):
            log.debug("read-ahead helper ended with status %s", status)
