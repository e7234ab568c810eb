"""Boot a kernel, attach an image and mount it: what every tool starts with.

``open_image`` checks the image file on the host first (so a missing or
unreadable file is reported as such, not as a filesystem error), boots a
``kernel.Kernel``, attaches the image as a virtio-blk disk, mounts the
filesystem (type and partition detected when not given) and halts the kernel
on the way out, which unmounts cleanly and flushes.

The kernel locks the image while attached (shared to read, exclusive to
write). ``attach`` waits a while for a holder to let go: ``fusermount3 -u``
returns before lklfuse has written its last changes back, and the tool run
next must not read a half-written image, nor write beside it.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kernel import MS_RDONLY, Disk, Kernel, Syscalls

from .cli import EXIT_USAGE, ToolError, describe


@dataclass
class Mounted:
    kernel: Kernel
    sys: Syscalls
    root: str  # the mount point inside the kernel
    fstype: str
    image: str
    readonly: bool


def check_image(path: str, write: bool) -> None:
    """Fail with one clear line unless ``path`` is an image we can open."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ToolError(describe(OSError(e.errno, e.strerror, path))) from None
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{path}: is a directory, not a disk image", EXIT_USAGE)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise ToolError(f"{path}: not a regular file or block device", EXIT_USAGE)
    if not os.access(path, os.R_OK):
        raise ToolError(f"{path}: Permission denied")
    if write and not os.access(path, os.W_OK):
        raise ToolError(f"{path}: Permission denied (the image must be writable)")
    if stat.S_ISREG(st.st_mode) and st.st_size < 4096:
        raise ToolError(f"{path}: too small to hold a filesystem ({st.st_size} bytes)")


LOCK_WAIT = 10.0  # seconds; an lklfuse unmounting writes back for a second or two


def attach(k: Kernel, path: str, readonly: bool, prog: str) -> Disk:
    """Attach the image to ``k``, waiting up to LOCK_WAIT seconds (with a notice) while
    another process holds it; exit status 2 if it still does."""
    try:
        return k.disk_add(path, readonly=readonly)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
    sys.stderr.write(f"{prog}: {path}: in use by another process; waiting up to "
                     f"{LOCK_WAIT:g} s for it to let go\n")
    sys.stderr.flush()
    try:
        return k.disk_add(path, readonly=readonly, lock_wait=LOCK_WAIT)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        what = "writing to it" if readonly else "using it"
        raise ToolError(f"{path}: in use by another process (locked: a mount or a copy still "
                        f"{what})", EXIT_USAGE) from None


@contextmanager
def open_image(path: str, *, readonly: bool, prog: str, fstype: str | None = None,
               part: int | None = None, mb: int = 64, options: str = "") -> Iterator[Mounted]:
    """Yield the mounted image; always halts the kernel (clean unmount) afterwards.

    Errors become ``ToolError`` with a line naming the image and the reason.
    """
    check_image(path, not readonly)
    k = Kernel(mb=mb)
    try:
        try:
            disk = attach(k, path, readonly, prog)
            root = k.mount_dev(disk, part=part, fstype=fstype,
                               flags=MS_RDONLY if readonly else 0, options=options)
        except OSError as e:
            raise ToolError(mount_message(path, e)) from e
        yield Mounted(k, k.sys, root, k.fstype_of(root), path, readonly)
    finally:
        try:
            k.halt()
        except OSError as e:
            raise ToolError(f"{path}: unmounting failed: {describe(e)}") from e


def mount_message(path: str, e: OSError) -> str:
    detail = e.strerror or os.strerror(e.errno or errno.EIO)
    name = e.filename if e.filename else path
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if name != path and not str(name).startswith(path):
        return f"{path}: {name}: {detail}"
    return f"{name}: {detail}"
