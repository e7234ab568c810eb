"""lklfuse: mount a disk image through FUSE, without root."""

from __future__ import annotations

import errno
import faulthandler
import fcntl
import logging
import os
import signal
import stat
import sys
import tempfile
from dataclasses import dataclass
from typing import IO, Any

import click

from kernel import MS_RDONLY, Kernel

from ..common.cli import (
    EXIT_CODES_HELP,
    EXIT_FAILURE,
    EXIT_USAGE,
    ToolError,
    describe,
    main_entry,
    run_tool,
    setup_logging,
)
from ..common.image import attach, check_image, mount_message
from .options import Options, parse

log = logging.getLogger("lklfuse")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each unmounts and exits 0

HELP = f"""Mount the filesystem in IMAGE on MOUNTPOINT through FUSE; no root needed.

\b
Options (-o, comma separated, as LKL's lklfuse):
  type=ext4|ext3|ext2|btrfs|xfs  filesystem type (detected when absent)
  part=N                         partition N (the only mountable one when absent)
  ro / rw                        read-only / read-write (default: read-write when the
                                 image is writable and the driver can write it)
  opts=O1\\,O2                   filesystem mount options (commas escaped as \\,)
  lock=FILE                      hold an exclusive lock on FILE while mounted
  mb=N                           memory for the kernel's caches, in MiB (default 64)
  log=FILE                       write the kernel log and errors to FILE
  uid=N, gid=N                   show every file as owned by N
  allow_other, default_permissions, fsname=, subtype=, ...  passed to FUSE

Unmount with `fusermount3 -u MOUNTPOINT` (or SIGINT/SIGTERM): the kernel
writes everything back and unmounts the image cleanly. In /etc/fstab:

\b
  /path/disk.img  /mnt/disk  fuse.lklfuse  noauto,user,type=ext4  0 0

{EXIT_CODES_HELP}
"""


@dataclass
class Mounted:
    kernel: Kernel
    root: str
    readonly: bool
    notice: str = ""


def _lock(path: str) -> IO[bytes]:
    """Take an exclusive flock on the lock file ``path`` (-o lock=); exit status 2 if another
    mount holds it. (The image itself is locked by the kernel while attached.)"""
    try:
        f = open(path, "ab")  # noqa: SIM115 - held while mounted
    except OSError as e:
        raise ToolError(f"{path}: cannot open the lock file: {e.strerror}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ToolError(f"{path}: already in use by another mount (locked)", EXIT_USAGE) from None
    return f


def mount_image(image: str, o: Options) -> Mounted:
    """Boot a kernel and mount the image, read-write when possible."""
    want_rw = not o.ro and os.access(image, os.W_OK)
    notice = ""
    if not o.ro and not want_rw:
        notice = f"{image}: the image is not writable; mounted read-only"
    for rw in ((True, False) if want_rw else (False,)):
        k = Kernel(mb=o.mb)
        try:
            disk = attach(k, image, not rw, "lklfuse")
            root = k.mount_dev(disk, part=o.part, fstype=o.fstype, flags=0 if rw else MS_RDONLY,
                               options=o.fs_opts)
            return Mounted(k, root, not rw, notice)
        except OSError as e:
            k.halt()
            if rw and e.errno == errno.EROFS and not o.rw:
                notice = f"{image}: {e.strerror}; mounted read-only"
                continue
            raise ToolError(mount_message(image, e)) from None
        except ToolError:
            k.halt()
            raise
    raise AssertionError("unreachable")


def check_mountpoint(mountpoint: str) -> None:
    try:
        st = os.stat(mountpoint)
    except OSError as e:
        raise ToolError(f"{mountpoint}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{mountpoint}: not a directory", EXIT_USAGE)
    if os.path.ismount(mountpoint):
        raise ToolError(f"{mountpoint}: mount point busy (something is mounted there)")
    if not os.access(mountpoint, os.W_OK) and os.geteuid() != 0:
        raise ToolError(f"{mountpoint}: Permission denied (you must own the mount point)")
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        raise ToolError(f"/dev/fuse: {e.strerror} (is the fuse module loaded and /dev/fuse "
                        "readable and writable by you?)") from None


def serve(image: str, mountpoint: str, o: Options, debug: bool, ready: Any = None) -> int:
    """Mount, run the FUSE loop until unmounted or signalled, unmount cleanly.

    ``ready(message)`` is called once: with None when the file system is
    mounted, or with the error line when it could not be.
    """
    import pyfuse3
    import trio

    from . import fastwait
    from .ops import KernelOps

    locks = []
    m: Mounted | None = None
    fuse_up = False
    try:
        check_image(image, False)
        check_mountpoint(mountpoint)
        if o.lock:
            locks.append(_lock(o.lock))
        m = mount_image(image, o)
        if m.notice:
            sys.stderr.write(f"lklfuse: {m.notice}\n")
        ops = KernelOps(m.kernel.sys, m.root, m.readonly, o.uid, o.gid)
        fuse_opts = {f"fsname={os.path.abspath(image)}", "subtype=lklfuse"}
        fuse_opts |= o.fuse
        if m.readonly:
            fuse_opts.add("ro")
        if debug:
            fuse_opts.add("debug")
        fastwait.install(pyfuse3)
        # from the mount on, a stop signal must unmount: one that comes before the loop
        # below listens is kept for it (by default it would kill us, the mount left dangling)
        early: list[int] = []
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda signum, _frame: early.append(signum))
        _fuse_init(pyfuse3, ops, mountpoint, fuse_opts)
        fuse_up = True
        if ready is not None:
            ready(None)
            ready = None

        async def loop() -> None:
            async with trio.open_nursery() as nursery:
                async def on_signal(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                        task_status.started()
                        if not early:
                            async for _sig in signals:
                                break
                        pyfuse3.terminate()

                async def writeback() -> None:
                    # the commit interval of a journaled mount (Linux's commit=5): changes
                    # nobody fsync'ed still reach the image within seconds
                    while True:
                        await trio.sleep(WRITEBACK_SECONDS)
                        try:
                            m.kernel.sys.sync()  # type: ignore[union-attr]
                        except OSError as e:
                            log.error("%s: writeback failed: %s", image, describe(e))

                # the handlers are in place before the first request is served: requests
                # that keep coming are served without a checkpoint (fastwait), and a signal
                # that found no handler would kill us with the mount left dangling
                await nursery.start(on_signal)
                if not m.readonly:
                    nursery.start_soon(writeback)
                await pyfuse3.main(min_tasks=1, max_tasks=1)
                nursery.cancel_scope.cancel()

        trio.run(loop)
        return 0
    except ToolError as e:
        if ready is not None:
            ready(str(e), e.code)
            return e.code
        raise
    finally:
        if fuse_up:
            try:
                pyfuse3.close(unmount=True)
            except Exception as e:  # noqa: BLE001 - still halt the kernel
                log.error("unmounting %s failed: %s", mountpoint, e)
        if m is not None:
            try:
                m.kernel.halt()  # writes back and unmounts the image cleanly
            except OSError as e:
                sys.stderr.write(f"lklfuse: {image}: clean unmount failed: {describe(e)}\n")
        for f in locks:
            f.close()


WRITEBACK_SECONDS = 5.0


def _fuse_init(pyfuse3: Any, ops: Any, mountpoint: str, opts: set[str]) -> None:
    """pyfuse3.init, with libfuse's own complaints turned into one line."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            pyfuse3.init(ops, mountpoint, opts)
            error = None
        except Exception as e:  # noqa: BLE001 - libfuse raises RuntimeError
            error = e
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if error is not None:
            capture.seek(0)
            said = [ln.strip() for ln in capture.read().decode(errors="replace").splitlines()
                    if ln.strip()]
            reason = said[-1] if said else str(error)
            raise ToolError(f"{mountpoint}: cannot mount: {reason}")


def daemonize(body: Any) -> int:
    """Fork; the child mounts and serves, the parent exits once it knows how it went."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            msg = pipe.read()
        if msg.startswith(b"OK"):
            return 0
        if not msg:
            os.waitpid(pid, 0)
            sys.stderr.write("lklfuse: the mount process died while starting\n")
            return EXIT_FAILURE
        status, _, text = msg.decode(errors="replace").partition(" ")
        sys.stderr.write(f"lklfuse: {text}\n")
        return int(status)
    os.close(r)
    os.setsid()
    reported = False

    def ready(message: str | None, code: int = EXIT_FAILURE) -> None:
        nonlocal reported
        reported = True
        os.write(w, b"OK" if message is None else f"{code} {message}".encode())
        os.close(w)
        if message is None:  # mounted: leave the terminal
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1):
                os.dup2(null, fd)
            if not _log_file:
                os.dup2(null, 2)
            os.close(null)

    try:
        code = body(ready)
    except ToolError as e:
        if not reported:
            ready(str(e), e.code)
        code = e.code
    except BaseException as e:  # noqa: BLE001 - the parent must hear something
        if not reported:
            ready(f"internal error: {describe(e)}", EXIT_FAILURE)
        code = EXIT_FAILURE
    os._exit(code)


_log_file: str | None = None


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "options", multiple=True, metavar="OPTIONS", help="Mount options (see above).")
@click.option("-f", "foreground", is_flag=True, help="Stay in the foreground.")
@click.option("-d", "debug", is_flag=True, help="Debug output (FUSE and kernel); implies -f.")
@click.option("-s", "single", is_flag=True, help="Single-threaded (always: the kernel is one CPU).")
@click.option("--debug", "debug2", is_flag=True, help="Show tracebacks.")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("mountpoint", type=click.Path(file_okay=False))
def cli(options: tuple[str, ...], foreground: bool, debug: bool, single: bool, debug2: bool,
        image: str, mountpoint: str) -> None:
    global _log_file
    debug = debug or debug2
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def body() -> int:
        global _log_file
        o = parse(list(options))
        _log_file = o.log
        if o.log:
            try:
                fd = os.open(o.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as e:
                raise ToolError(f"{o.log}: {e.strerror}") from None
            os.dup2(fd, 2)
            os.close(fd)
        setup_logging(bool(o.log), debug)
        if foreground or debug:
            return serve(image, mountpoint, o, debug)
        return daemonize(lambda ready: serve(image, mountpoint, o, debug, ready))

    run_tool("lklfuse", body, debug)


def main() -> None:
    main_entry(cli, "lklfuse")


if __name__ == "__main__":
    main()
