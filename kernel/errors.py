"""Errno-carrying exceptions of the library kernel.

Every error the kernel raises is a ``KernelError``, which is an ``OSError``
carrying the Linux errno. For the errnos that Python maps to a builtin
subclass (ENOENT -> FileNotFoundError, ...) the raised class derives from that
builtin too, so callers can catch either ``KernelError`` or the standard class.

Three kinds of failure are kept apart, as pycdlib does:
  * a damaged image: ``EUCLEAN`` (Linux's EFSCORRUPTED) or ``EIO``, with a
    message naming the structure and block (``corrupted()``);
  * bad input from the caller: the errno Linux returns for it;
  * a bug in the kernel: any non-OSError exception, which is never caught.
"""

from __future__ import annotations

import errno as _errno

EUCLEAN = _errno.EUCLEAN  # Linux calls it EFSCORRUPTED inside filesystems
EFSCORRUPTED = EUCLEAN
EFSBADCRC = _errno.EBADMSG  # what ext4/xfs return for a checksum mismatch


class KernelError(OSError):
    """Base class of every error raised by the kernel (an OSError with errno)."""


class FsCorruptedError(KernelError):
    """The on-disk structures are inconsistent (EUCLEAN / EBADMSG / EIO)."""


_BUILTIN = {
    _errno.ENOENT: FileNotFoundError,
    _errno.EEXIST: FileExistsError,
    _errno.EISDIR: IsADirectoryError,
    _errno.ENOTDIR: NotADirectoryError,
    _errno.EACCES: PermissionError,
    _errno.EPERM: PermissionError,
    _errno.EINTR: InterruptedError,
    _errno.EAGAIN: BlockingIOError,
    _errno.ECHILD: ChildProcessError,
    _errno.ETIMEDOUT: TimeoutError,
}

_CLASSES: dict[int, type[KernelError]] = {}


def _class_for(code: int) -> type[KernelError]:
    cls = _CLASSES.get(code)
    if cls is None:
        if code in (EUCLEAN, EFSBADCRC):
            cls = FsCorruptedError
        else:
            builtin = _BUILTIN.get(code)
            if builtin is None:
                cls = KernelError
            else:
                cls = type("Kernel" + builtin.__name__, (KernelError, builtin), {})
        _CLASSES[code] = cls
    return cls


def kerr(code: int, what: str | bytes | None = None, detail: str | None = None) -> KernelError:
    """Build the exception for ``code``; ``what`` names the path or structure.

    The message reads like Linux's ``strerror`` followed by the detail, e.g.
    ``[Errno 2] No such file or directory: '/mnt/x'``.
    """
    cls = _class_for(code)
    message = _errno_message(code)
    if detail:
        message = f"{message} ({detail})"
    if what is None:
        return cls(code, message)
    if isinstance(what, bytes):
        what = what.decode("utf-8", "surrogateescape")
    return cls(code, message, what)


def corrupted(what: str, detail: str, code: int = EUCLEAN) -> KernelError:
    """A damaged-image error naming the structure and what is wrong with it."""
    return kerr(code, what, detail)


def _errno_message(code: int) -> str:
    import os

    if code == EUCLEAN:
        return "Structure needs cleaning"
    return os.strerror(code)
