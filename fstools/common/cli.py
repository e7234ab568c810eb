"""Exit codes, one-line error messages and the main-function wrapper of every tool.

Every tool reports a failure as one line on stderr, ``prog: what: why``,
and exits non-zero; a traceback appears only with ``--debug``. Exit codes:

  0  success
  1  failure: unreadable or damaged image, I/O error, no space, ...
  2  usage error (bad option or argument), or the image is locked by another mount
  3  finished, but some files were skipped (``--keep-going``)
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import gc
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import click

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

EXIT_CODES_HELP = (
    "Exit status: 0 success; 1 failure (unreadable or damaged image, I/O error, no space); "
    "2 usage error or image locked; 3 finished with files skipped (--keep-going)."
)

FSTYPES = ("ext4", "ext3", "ext2", "btrfs", "xfs")


class ToolError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def describe(err: BaseException) -> str:
    """One line naming the file and the reason."""
    if isinstance(err, ToolError):
        return str(err)
    if isinstance(err, OSError):
        reason = err.strerror or (errno.errorcode.get(err.errno or 0) or str(err))
        name = err.filename
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        if err.filename2 is not None:
            return f"{name} -> {os.fsdecode(err.filename2)}: {reason}"
        return f"{name}: {reason}" if name else reason
    return f"{type(err).__name__}: {err}"


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    raise ToolError(message, code)


def run_tool(prog: str, body: Callable[[], int | None], debug: bool) -> NoReturn:
    """Run ``body`` and exit with its status, turning errors into one line."""
    try:
        code = body() or EXIT_OK
    except ToolError as e:
        if debug:
            traceback.print_exc()
        _say(prog, str(e))
        code = e.code
    except KeyboardInterrupt:
        _say(prog, "interrupted")
        code = 130
    except BrokenPipeError:
        # the reader went away (`fs2tar img - | head`): not our failure to report
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        code = EXIT_FAILURE
    except OSError as e:
        if debug:
            traceback.print_exc()
        _say(prog, describe(e))
        code = EXIT_FAILURE
    except Exception as e:  # a bug: still one line, with the traceback on request
        if debug:
            traceback.print_exc()
        _say(prog, f"internal error: {describe(e)} (run with --debug for details)")
        code = EXIT_FAILURE
    sys.exit(code)


def _say(prog: str, message: str) -> None:
    try:
        sys.stderr.write(f"{prog}: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass


def setup_logging(kernel_log: bool, debug: bool) -> None:
    """Show the kernel log on stderr with ``-p``/``--debug``; warnings always."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[kernel] %(name)s: %(message)s"))
    root = logging.getLogger("kernel")
    root.addHandler(handler)
    handler.setLevel(logging.DEBUG if debug else logging.INFO if kernel_log else logging.WARNING)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def fstype_option() -> Any:
    return click.option("-t", "--filesystem-type", "--type", "fstype",
                        type=click.Choice(FSTYPES), default=None,
                        help="Filesystem type; detected from the superblock when omitted.")


def partition_option() -> Any:
    return click.option("-P", "--partition", "part", type=click.IntRange(min=0), default=None,
                        help="Partition number (1-4 primary, 5+ logical; 0 = whole disk); "
                             "the only mountable partition is chosen when omitted.")


def debug_option() -> Any:
    return click.option("--debug", is_flag=True, help="Show tracebacks and the kernel's debug log.")


def mb_option(default: int = 64) -> Any:
    return click.option("--mb", type=click.IntRange(min=4), default=default, show_default=True,
                        help="Memory for the kernel's caches, in MiB (LKL's mb=).")


# The kernel keeps many small objects (dentries, inodes, parsed blocks) and makes many more
# per system call; with Python's default thresholds (700, 10, 10) the cycle collector runs
# every few files and rescans what survives, about 8% of an export. Collecting young objects
# every 50,000 allocations instead costs a few MB at most and a third of that time.
GC_THRESHOLDS = (50_000, 20, 10)


def main_entry(command: click.Command, prog: str) -> NoReturn:
    """Run a click command and leave the process with its status."""
    leave(prog, run_command(command, prog))


def run_command(command: click.Command, prog: str) -> object:
    """Run a click command; its exit code (as ``sys.exit`` takes it). A usage error is one
    line and code 2. The process goes on (the profiler runs the tools this way)."""
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        try:
            command.main(prog_name=prog, standalone_mode=False)
            return EXIT_OK
        except click.UsageError as e:
            _say(prog, f"{e.format_message()} (see '{prog} --help')")
            return EXIT_USAGE
        except click.Abort:
            _say(prog, "interrupted")
            return 130
        except click.exceptions.Exit as e:
            return e.exit_code
    except SystemExit as e:
        return e.code


def leave(prog: str, code: object) -> NoReturn:
    """Exit with ``code`` (as ``sys.exit`` takes it), without tearing the interpreter down.

    After a large copy the kernel holds a few hundred thousand objects (dentries, inodes,
    cached blocks); the interpreter's own exit frees them one by one, 0.5 s after a
    45,000-file cptofs, when the work is long done. When this runs the image is unmounted
    and every file of the tool is closed; what the interpreter's exit would still do is
    done here: wait for other threads, run the atexit handlers, flush the standard streams.
    """
    if code is None:
        status = EXIT_OK
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        _say(prog, str(code))
        status = EXIT_FAILURE
    main = threading.main_thread()
    for t in threading.enumerate():
        if t is not main and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    try:
        if not sys.stdout.closed:
            sys.stdout.flush()
    except BrokenPipeError:
        status = status or EXIT_FAILURE  # the reader went away: nothing to tell it
    except OSError as e:
        _say(prog, f"standard output: {describe(e)}")
        status = status or EXIT_FAILURE
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(status)
