"""fs2tar on several CPUs: one process walks, workers write, the parent joins their pieces.

After the image is mounted (read-only), ``export_parallel`` forks a walker and
N workers; each inherits the mounted kernel (a kernel survives fork: see
``kernel``). The walker lists every directory and numbers every entry
(``TreeWalk.items``): block b of BLOCK consecutive entries goes to worker
b mod N, down a pipe. A worker writes the entries it is given
(``Exporter.do_item``): stat, attributes and data, the bulk of the work, turned
into tar bytes by libarchive in memory, sent up its pipe in frames with the
warnings, SELinux lines and progress of each block. The parent takes block 0
from worker 0, block 1 from worker 1, and so on, and writes the bytes through
libarchive's compression and blocking (``RawWriter``), or, when the archive is
a plain stream to a pipe or a regular file, moves them there from the workers'
pipes with splice(2) (``_DirectOut``), so the archive is byte for byte the one
a single process writes.

A failure arrives in its place in the stream, so the parent reports what a
single exporter would have reported, having written what it would have
written before it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import pickle
import select
import signal
import stat
import struct
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn

import kernel

from ..common.cli import ToolError
from .archive import ArchiveWriteError, RawWriter, TarWriter, finishing
from .export import BLOCK as ENTRIES_PER_BLOCK
from .export import DIR as DIR_ITEM
from .export import Exporter, Item, Stats, TreeWalk

_FRAME = struct.Struct("<BI")
DATA, WARN, SELINUX, BLOCK_DONE, DONE, FATAL, BUG, WALKER_GONE = range(8)
_END = "end of the walk"
_PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


def default_jobs() -> int:
    """As many workers as CPUs this process may run on, at most four."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


class _Frames:
    """A worker's side of its pipe.

    The parent takes a worker's bytes only when the worker's block is next, so a worker
    that is ahead keeps what the pipe cannot hold (up to AHEAD bytes) and goes on with its
    next block rather than wait; a pipe holds 1 MiB at most without privilege, less than a
    block's bytes. The walker's pipe (``queue`` False) is written straight through."""

    AHEAD = 16 << 20

    def __init__(self, fd: int, queue: bool = False) -> None:
        self.fd = fd
        self.pending: collections.deque[bytes | memoryview] = collections.deque()
        self.queued = 0
        self.queue = queue
        if queue:
            os.set_blocking(fd, False)

    def send(self, kind: int, payload: bytes | memoryview = b"") -> None:
        head = _FRAME.pack(kind, len(payload))
        if len(payload) < 4096:
            self._put(head + bytes(payload))
        else:
            self._put(head)
            self._put(payload)

    def obj(self, kind: int, value: Any) -> None:
        self.send(kind, pickle.dumps(value, pickle.HIGHEST_PROTOCOL))

    def _put(self, data: bytes | memoryview) -> None:
        if not self.queue:
            _write_all(self.fd, data)
            return
        if not self.pending:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                n = 0
            if n == len(data):
                return
            data = memoryview(data)[n:]
        self.pending.append(bytes(data))  # a copy: the caller reuses its buffer
        self.queued += len(data)
        self._write_some()  # the pipe may have room again: keep the parent fed
        if self.queued > self.AHEAD:
            self.flush(self.AHEAD // 2)

    def flush(self, limit: int = 0, until_readable: int = -1) -> None:
        """Write what is kept until at most ``limit`` bytes are left, or until
        ``until_readable`` has something to read."""
        while self.queued > limit:
            rd = [until_readable] if until_readable >= 0 else []
            readable, _w, _x = select.select(rd, [self.fd], [])
            if readable:
                return
            self._write_some()

    def _write_some(self) -> None:
        while self.pending:
            data = self.pending[0]
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                return
            self.queued -= n
            if n < len(data):
                self.pending[0] = memoryview(data)[n:]  # the rest, not a copy of it
                return
            self.pending.popleft()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _SelinuxLines:
    """What the exporter writes to --selinux's file, sent to the parent instead."""

    def __init__(self, frames: _Frames) -> None:
        self.frames = frames

    def write(self, line: bytes) -> int:
        self.frames.send(SELINUX, line)
        return len(line)


def _stats_tuple(st: Stats) -> tuple[int, int, list[str], int, int]:
    return st.files, st.bytes, st.skipped, st.dropped_xattrs, st.sockets


def _read_exact(fd: int, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        more = os.read(fd, n - len(data))
        if not more:
            return None
        data += more
    return data


def _read_msg(fd: int) -> Any:
    """One pickled message from a pipe (None at its end)."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    data = _read_exact(fd, struct.unpack("<I", head)[0])
    return None if data is None else pickle.loads(data)


def _send_msg(fd: int, value: Any) -> None:
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    _write_all(fd, struct.pack("<I", len(data)) + data)


def _walker(sys: kernel.Syscalls, root: str, job_fds: list[int], fd: int) -> NoReturn:
    """Walk the tree; block b's items go down ``job_fds[b % N]``; never returns."""
    code = 0
    frames = _Frames(fd)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
        walk = TreeWalk(sys, root)
        n = len(job_fds)
        block = 0
        batch: list[Item] = []
        try:
            for item, _fd in walk.items():
                if item[1] == DIR_ITEM:
                    item = item[:9] + (None,)  # a worker takes a directory's stat itself
                b = item[0] // ENTRIES_PER_BLOCK
                if b != block:
                    _send_msg(job_fds[block % n], batch)
                    block, batch = b, []
                batch.append(item)
            if batch:
                _send_msg(job_fds[block % n], batch)
        except OSError as e:
            frames.obj(FATAL, ("os", e.errno, e.strerror, e.filename))
        else:
            for jfd in job_fds:
                _send_msg(jfd, _END)
            frames.obj(DONE, (walk.entries, _stats_tuple(Stats())))
    except BrokenPipeError:
        code = 1  # a worker or the parent is gone
    except BaseException:  # noqa: BLE001 - a bug: the parent reports it
        code = 1
        with contextlib.suppress(OSError):
            frames.obj(BUG, traceback.format_exc())
    os._exit(code)


def _worker(sys: kernel.Syscalls, root: str, fmt: str, options: dict[str, Any], job_fd: int,
            fd: int) -> NoReturn:
    """Write the items the walker sends down ``job_fd`` into ``fd``; never returns."""
    code = 0
    frames = _Frames(fd, queue=True)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
        writer = TarWriter(None, fmt, spill=lambda view: frames.send(DATA, view))

        def block_done(stats: Stats) -> None:
            writer.flush()
            frames.obj(BLOCK_DONE, (stats.files, stats.bytes))

        exporter = Exporter(sys, root, writer, warn=lambda msg: frames.obj(WARN, msg),
                            selinux_out=(_SelinuxLines(frames)  # type: ignore[arg-type]
                                         if options.pop("selinux") else None),
                            block_done=block_done, **options)
        try:
            while True:
                frames.flush(until_readable=job_fd)  # what is kept goes while we wait
                batch = _read_msg(job_fd)
                if batch is None:  # the walker is gone: the parent hears why from it
                    writer.flush()
                    frames.obj(WALKER_GONE, None)
                    break
                if batch == _END:
                    exporter.finish()
                    frames.obj(DONE, (0, _stats_tuple(exporter.stats)))
                    break
                for item in batch:
                    exporter.do_item(item)
        except OSError as e:
            writer.flush()
            frames.obj(FATAL, ("os", e.errno, e.strerror, e.filename))
        except ArchiveWriteError as e:
            writer.flush()
            frames.obj(FATAL, ("archive", str(e), e.fatal))
        writer.abort()
        frames.flush()
    except BrokenPipeError:
        code = 1  # the parent is gone
    except BaseException:  # noqa: BLE001 - a bug: the parent reports it
        code = 1
        with contextlib.suppress(OSError):
            frames.obj(BUG, traceback.format_exc())
            frames.flush()
    os._exit(code)


class _Stream:
    """The parent's side of one worker's pipe, read unbuffered so that a frame's data can be
    moved on without being read here (``_DirectOut.splice``)."""

    def __init__(self, index: int, pid: int, fd: int, workers: int) -> None:
        self.index = index
        self.name = f"worker {index}" if index < workers else "the walker"
        self.pid = pid
        self.fd = fd
        self.files = 0
        self.bytes = 0
        self.done: tuple[int, tuple[int, int, list[str], int, int]] | None = None

    def head(self) -> tuple[int, int]:
        """The next frame's kind and length; its payload is still in the pipe."""
        kind, n = _FRAME.unpack(self.read(_FRAME.size))
        if kind == BUG:
            raise RuntimeError(f"{self.name} of the export failed:\n"
                               + self.read(n).decode(errors="replace"))
        return kind, n

    def frame(self) -> tuple[int, bytes]:
        kind, n = self.head()
        return kind, self.read(n) if n else b""

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes of the pipe."""
        data = _read_exact(self.fd, n)
        if data is None:
            self.gone()
        return data

    def gone(self) -> NoReturn:
        raise ToolError(f"{self.name} of the export ended unexpectedly{_exit_status(self.pid)}")


def _exit_status(pid: int) -> str:
    try:
        got, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return ""
    if got and os.WIFSIGNALED(status):
        return f" (killed by signal {os.WTERMSIG(status)})"
    if got and os.WIFEXITED(status):
        return f" (exit status {os.WEXITSTATUS(status)})"
    return ""


class _DirectOut:
    """The archive written straight to a pipe, a socket or a regular file: the workers'
    bytes go from their pipes to it by splice(2), never copied through this process.

    The bytes are those a RawWriter writes there: no compression, and the last block not
    padded (libarchive pads only devices and named FIFOs, which keep the RawWriter)."""

    def __init__(self, out: str | int) -> None:
        if isinstance(out, int):
            self.fd, self._own = out, False
        else:
            try:
                self.fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                  0o666)
            except OSError as e:
                raise ArchiveWriteError(f"Failed to open '{out}': {e.strerror}") from None
            self._own = True
        self._splice = True  # until the kernel says this pair of files cannot

    @staticmethod
    def wanted(out: str | int, compression: str | None) -> bool:
        """Whether ``out`` is a place the archive can go to directly."""
        if compression is not None:
            return False
        try:
            mode = os.fstat(out).st_mode if isinstance(out, int) else os.stat(out).st_mode
        except FileNotFoundError:
            return not isinstance(out, int)  # a file still to be made
        except OSError:
            return False  # let libarchive say what is wrong
        return stat.S_ISREG(mode) or (isinstance(out, int) and
                                      (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)))

    def write(self, data: bytes | memoryview) -> None:
        try:
            _write_all(self.fd, data)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise ArchiveWriteError(f"Write error: {e.strerror}") from None

    def splice(self, stream: _Stream, n: int) -> None:
        """Move the next ``n`` bytes of ``stream``'s pipe to the archive."""
        while n:
            if self._splice:
                try:
                    k = os.splice(stream.fd, self.fd, n)
                except BrokenPipeError:
                    raise
                except OSError as e:
                    if e.errno != errno.EINVAL:  # EINVAL: not between these two files
                        raise ArchiveWriteError(f"Write error: {e.strerror}") from None
                    self._splice = False
                    continue
                if not k:
                    stream.gone()
            else:
                data = stream.read(min(n, _PIPE_SIZE))
                self.write(data)
                k = len(data)
            n -= k

    def close(self) -> None:
        if self._own:
            self._own = False
            try:
                os.close(self.fd)
            except OSError as e:
                raise ArchiveWriteError(f"Write error: {e.strerror}") from None

    def abort(self) -> None:
        if self._own:
            self._own = False
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, _PIPE_SIZE)
    return r, w


def export_parallel(sys: kernel.Syscalls, root: str, out: str | int, label: str, *, fmt: str,
                    compression: str | None, jobs: int, keep_going: bool, verbose: bool,
                    selinux_out: BinaryIO | None, birthtime: bool,
                    warn: Callable[[str], None],
                    progress: Callable[[int, int], None] | None) -> Stats:
    """Export ``root`` to ``out`` with a walker and ``jobs`` worker processes; the result
    and its errors are those of one ``Exporter`` writing to a ``TarWriter`` on ``out``."""
    options = {"keep_going": keep_going, "verbose": verbose, "birthtime": birthtime,
               "selinux": selinux_out is not None}
    try:
        writer: RawWriter | _DirectOut = (_DirectOut(out) if _DirectOut.wanted(out, compression)
                                          else RawWriter(out, compression))
    except ArchiveWriteError as e:
        raise ToolError(f"{label}: {e}") from None
    job_pipes = [_pipe() for _ in range(jobs)]  # walker -> worker k
    out_pipes = [_pipe() for _ in range(jobs + 1)]  # worker k -> parent; the last: walker
    streams: list[_Stream] = []
    try:
        with finishing(writer, label):
            for me in range(jobs + 1):
                pid = os.fork()
                if pid == 0:
                    # keep only this process's ends of the pipes
                    keep = {out_pipes[me][1]}
                    if me < jobs:
                        keep.add(job_pipes[me][0])
                    else:
                        keep.update(w for _r, w in job_pipes)
                    for fd in [fd for pair in job_pipes + out_pipes for fd in pair]:
                        if fd not in keep:
                            with contextlib.suppress(OSError):
                                os.close(fd)
                    if me < jobs:
                        _worker(sys, root, fmt, dict(options), job_pipes[me][0],
                                out_pipes[me][1])
                    _walker(sys, root, [w for _r, w in job_pipes], out_pipes[me][1])
                streams.append(_Stream(me, pid, out_pipes[me][0], jobs))
            for fd in [fd for pair in job_pipes for fd in pair] + [w for _r, w in out_pipes]:
                os.close(fd)
            stats = _join(streams[:jobs], streams[jobs], writer, warn, selinux_out, progress)
            writer.write(bytes(1024))  # the end of the archive: two zero blocks
        return stats
    finally:
        for s in streams:
            with contextlib.suppress(OSError):
                os.kill(s.pid, signal.SIGKILL)  # done already, or stopped here
            with contextlib.suppress(OSError):
                os.close(s.fd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(s.pid, 0)


def _raise_fatal(payload: bytes) -> NoReturn:
    what = pickle.loads(payload)
    if what[0] == "os":
        raise OSError(what[1], what[2], what[3])
    raise ArchiveWriteError(what[1], what[2])


def _walker_failure(walker: _Stream) -> NoReturn:
    """The walker stopped early: raise what it said (its failure, or its death)."""
    kind, payload = walker.frame()  # a bug raises here, a death too
    if kind == FATAL:
        _raise_fatal(payload)
    raise RuntimeError(f"the walker stopped with frame kind {kind}")


def _join(streams: list[_Stream], walker: _Stream, writer: RawWriter | _DirectOut,
          warn: Callable[[str], None], selinux_out: BinaryIO | None,
          progress: Callable[[int, int], None] | None) -> Stats:
    """Copy the workers' blocks in turn to ``writer`` until the walk's end."""
    jobs = len(streams)
    block = 0
    direct = writer if isinstance(writer, _DirectOut) else None
    while True:
        s = streams[block % jobs]
        kind, n = s.head()
        if kind == DATA and direct is not None:
            direct.splice(s, n)
            continue
        payload = s.read(n) if n else b""
        if kind == DATA:
            writer.write(payload)
        elif kind == WARN:
            warn(pickle.loads(payload))
        elif kind == SELINUX:
            if selinux_out is not None:
                selinux_out.write(payload)
        elif kind == BLOCK_DONE:
            s.files, s.bytes = pickle.loads(payload)
            if progress is not None:
                progress(sum(x.files for x in streams), sum(x.bytes for x in streams))
            block += 1
        elif kind == FATAL:
            _raise_fatal(payload)
        elif kind == WALKER_GONE:
            _walker_failure(walker)
        elif kind == DONE:
            s.done = pickle.loads(payload)
            break
        else:
            raise RuntimeError(f"worker {s.index} sent frame kind {kind}")
    # the walk has ended: the others have nothing left but their own end
    for other in streams:
        if other.done is None:
            kind, payload = other.frame()
            if kind == WALKER_GONE:
                _walker_failure(walker)
            if kind != DONE:
                raise RuntimeError(f"worker {other.index} went on after the end of the walk")
            other.done = pickle.loads(payload)
    kind, payload = walker.frame()
    if kind == FATAL:
        _raise_fatal(payload)
    if kind != DONE:
        raise RuntimeError(f"the walker sent frame kind {kind} at its end")
    entries = pickle.loads(payload)[0]
    if not (block - 1) * ENTRIES_PER_BLOCK < entries <= block * ENTRIES_PER_BLOCK:
        raise RuntimeError(f"{block} blocks joined for a walk of {entries} entries")
    stats = Stats()
    for x in streams:
        assert x.done is not None
        files, nbytes, skipped, dropped, sockets = x.done[1]
        stats.files += files
        stats.bytes += nbytes
        stats.skipped.extend(skipped)
        stats.dropped_xattrs += dropped
        stats.sockets += sockets
    return stats
