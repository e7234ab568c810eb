"""fs2tar on several CPUs: forked exporters share one walk, the parent joins their pieces.

After the image is mounted (read-only), ``export_parallel`` forks N workers;
each inherits the mounted kernel (a kernel survives fork: see ``kernel``) and
walks the whole tree in the same order. The walk numbers every entry alike in
every worker, and worker k writes the entries of blocks k, k+N, k+2N, ...
(``Exporter.share``): their tar bytes, made by libarchive in memory, go down a
pipe in frames, with the warnings, SELinux lines and progress of each block.
The parent takes block 0 from worker 0, block 1 from worker 1, and so on,
and writes the bytes through libarchive's compression and blocking
(``RawWriter``), so the archive is byte for byte the one a single exporter
writes. Directory listings are read by every worker (that is what keeps their
numbering alike); stat, attributes and file data, the bulk of the work, are
read once, by the entry's owner.

A worker's failure arrives in its place in the stream, so the parent reports
what a single exporter would have reported, having written what it would
have written before it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import signal
import struct
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn

import kernel

from ..common.cli import ToolError
from .archive import ArchiveWriteError, RawWriter, TarWriter
from .export import Exporter, Stats

_FRAME = struct.Struct("<BI")
DATA, WARN, SELINUX, BLOCK, DONE, FATAL, BUG = range(7)
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
    """A worker's side of its pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: int, payload: bytes | memoryview = b"") -> None:
        head = _FRAME.pack(kind, len(payload))
        if len(payload) < 4096:
            _write_all(self.fd, head + bytes(payload))
        else:
            _write_all(self.fd, head)
            _write_all(self.fd, payload)

    def obj(self, kind: int, value: Any) -> None:
        self.send(kind, pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


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


def _worker(sys: kernel.Syscalls, root: str, fmt: str, options: dict[str, Any], me: int,
            jobs: int, fd: int) -> NoReturn:
    """Export this worker's share of the walk into ``fd``; never returns."""
    code = 0
    frames = _Frames(fd)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
        writer = TarWriter(None, fmt, spill=lambda view: frames.send(DATA, view))

        def block_done(stats: Stats) -> None:
            writer.flush()
            frames.obj(BLOCK, (stats.files, stats.bytes))

        exporter = Exporter(sys, root, writer, warn=lambda msg: frames.obj(WARN, msg),
                            selinux_out=(_SelinuxLines(frames)  # type: ignore[arg-type]
                                         if options.pop("selinux") else None),
                            share=(me, jobs), block_done=block_done, **options)
        try:
            stats = exporter.run()
        except OSError as e:
            writer.flush()
            frames.obj(FATAL, ("os", e.errno, e.strerror, e.filename))
        except ArchiveWriteError as e:
            writer.flush()
            frames.obj(FATAL, ("archive", str(e), e.fatal))
        else:
            frames.obj(DONE, (exporter.entries, _stats_tuple(stats)))
        writer.abort()
    except BrokenPipeError:
        code = 1  # the parent is gone
    except BaseException:  # noqa: BLE001 - a bug: the parent reports it
        code = 1
        with contextlib.suppress(OSError):
            frames.obj(BUG, traceback.format_exc())
    os._exit(code)


class _Stream:
    """The parent's side of one worker's pipe."""

    def __init__(self, index: int, pid: int, fd: int) -> None:
        self.index = index
        self.pid = pid
        self.file = os.fdopen(fd, "rb", buffering=_PIPE_SIZE)
        self.files = 0
        self.bytes = 0
        self.done: tuple[int, tuple[int, int, list[str], int, int]] | None = None

    def frame(self) -> tuple[int, bytes]:
        head = self.file.read(_FRAME.size)
        if len(head) < _FRAME.size:
            raise ToolError(f"worker {self.index} of the export ended unexpectedly"
                            f"{_exit_status(self.pid)}")
        kind, n = _FRAME.unpack(head)
        payload = self.file.read(n) if n else b""
        if len(payload) < n:
            raise ToolError(f"worker {self.index} of the export ended unexpectedly"
                            f"{_exit_status(self.pid)}")
        if kind == BUG:
            raise RuntimeError(f"worker {self.index} of the export failed:\n"
                               + payload.decode(errors="replace"))
        return kind, payload


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


def export_parallel(sys: kernel.Syscalls, root: str, out: str | int, label: str, *, fmt: str,
                    compression: str | None, jobs: int, keep_going: bool, verbose: bool,
                    selinux_out: BinaryIO | None, birthtime: bool,
                    warn: Callable[[str], None],
                    progress: Callable[[int, int], None] | None) -> Stats:
    """Export ``root`` to ``out`` with ``jobs`` worker processes; the result and its errors
    are those of one ``Exporter`` writing to a ``TarWriter`` on ``out``."""
    options = {"keep_going": keep_going, "verbose": verbose, "birthtime": birthtime,
               "selinux": selinux_out is not None}
    try:
        writer = RawWriter(out, compression)
    except ArchiveWriteError as e:
        raise ToolError(f"{label}: {e}") from None
    streams: list[_Stream] = []
    ok = False
    try:
        for me in range(jobs):
            r, w = os.pipe()
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, F_SETPIPE_SZ, _PIPE_SIZE)
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(r)
                for s in streams:
                    with contextlib.suppress(OSError):
                        s.file.close()
                _worker(sys, root, fmt, dict(options), me, jobs, w)
            os.close(w)
            streams.append(_Stream(me, pid, r))
        stats = _join(streams, writer, warn, selinux_out, progress)
        writer.write(bytes(1024))  # the end of the archive: two zero blocks
        writer.close()
        ok = True
        return stats
    except ArchiveWriteError as e:
        raise ToolError(f"{label}: {e}") from None
    finally:
        if not ok:
            writer.abort()
        for s in streams:
            if not ok:
                with contextlib.suppress(OSError):
                    os.kill(s.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                s.file.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(s.pid, 0)


def _join(streams: list[_Stream], writer: RawWriter, warn: Callable[[str], None],
          selinux_out: BinaryIO | None, progress: Callable[[int, int], None] | None) -> Stats:
    """Copy the workers' blocks in turn to ``writer`` until the walk's end."""
    jobs = len(streams)
    block = 0
    while True:
        s = streams[block % jobs]
        kind, payload = s.frame()
        if kind == DATA:
            writer.write(payload)
        elif kind == WARN:
            warn(pickle.loads(payload))
        elif kind == SELINUX:
            if selinux_out is not None:
                selinux_out.write(payload)
        elif kind == BLOCK:
            s.files, s.bytes = pickle.loads(payload)
            if progress is not None:
                progress(sum(x.files for x in streams), sum(x.bytes for x in streams))
            block += 1
        elif kind == FATAL:
            what = pickle.loads(payload)
            if what[0] == "os":
                raise OSError(what[1], what[2], what[3])
            raise ArchiveWriteError(what[1], what[2])
        elif kind == DONE:
            s.done = pickle.loads(payload)
            break
        else:
            raise RuntimeError(f"worker {s.index} sent frame kind {kind}")
    # the walk has ended: the others have nothing left but their own end
    for other in streams:
        if other.done is None:
            kind, payload = other.frame()
            if kind != DONE:
                raise RuntimeError(f"worker {other.index} went on after the end of the walk")
            other.done = pickle.loads(payload)
    totals = {x.done[0] for x in streams if x.done is not None}
    if len(totals) != 1:
        raise RuntimeError(f"the workers counted different walks: {sorted(totals)} entries")
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
