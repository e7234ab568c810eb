"""Shared pieces of the ext4 tests: unpacking images, mounting them, manifests."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from helpers import IMAGES, unpack_image
from treeutil import kernel_manifest

import kernel
from kernel import Kernel

_spec = importlib.util.spec_from_file_location("make_ext4", IMAGES / "make_ext4.py")
assert _spec is not None and _spec.loader is not None
make_ext4: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_ext4)


def expected(name: str) -> dict[str, Any]:
    return json.loads((IMAGES / f"ext4-{name}.json").read_text())


def unpack(name: str, tmp: Path) -> Path:
    return unpack_image(f"ext4-{name}.img", tmp)


def mount(k: Kernel, img: Path, options: str = "", readonly_disk: bool = True) -> str:
    disk = k.disk_add(img, readonly=readonly_disk)
    return k.mount_dev(disk, flags=kernel.MS_RDONLY, options=options)


def tree(k: Kernel, root: str, big: list[str]) -> tuple[dict, dict]:
    """The image's tree through kernel.sys, summarised like the expected manifest."""
    m = kernel_manifest(k.sys, root)
    return make_ext4.summarize(m, big)


def readdir_names(k: Kernel, path: str, count: int = 32768) -> list[tuple[bytes, int, int]]:
    """Every (name, d_ino, d_off) of a directory, "." and ".." excluded."""
    fd = k.sys.open(path, kernel.O_RDONLY | kernel.O_DIRECTORY)
    out = []
    try:
        while True:
            batch = k.sys.getdents64(fd, count)
            if not batch:
                break
            out.extend((d.d_name, d.d_ino, d.d_off) for d in batch if d.d_name not in (b".", b".."))
    finally:
        k.sys.close(fd)
    return out


def names_sha(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def file_sha(path: os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_file(s: Any, path: str, data: bytes, flags: int = 0) -> None:
    """Create or truncate ``path`` through kernel.sys and write ``data`` to it."""
    fd = s.open(path, kernel.O_CREAT | kernel.O_WRONLY | kernel.O_TRUNC | flags, 0o644)
    try:
        pos = 0
        while pos < len(data):
            pos += s.write(fd, data[pos:pos + (1 << 20)])
    finally:
        s.close(fd)


def read_file(s: Any, path: str) -> bytes:
    fd = s.open(path, kernel.O_RDONLY)
    try:
        out = []
        while chunk := s.read(fd, 1 << 20):
            out.append(chunk)
        return b"".join(out)
    finally:
        s.close(fd)


def host_fallocate(fd: int, mode: int, off: int, ln: int) -> None:
    """fallocate(2) on a host file (the os module has only posix_fallocate)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(ln)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
