"""Helpers shared by the tests: host tools, root checks, test images."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "images"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_tool(*names: str) -> None:
    """Skip (a failure in CI) when a host tool is missing."""
    for name in names:
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists() \
                and not Path("/sbin", name).exists():
            pytest.skip(f"host tool {name} is not installed")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def run(*cmd: str | os.PathLike[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    return subprocess.run([os.fspath(c) for c in cmd], check=check, text=True,
                          capture_output=True, env=env, **kw)  # type: ignore[call-overload]


def unpack_image(name: str, dest: Path) -> Path:
    """Decompress ``tests/images/<name>.zst`` into ``dest`` (sparse) and return its path.

    Runs of zeros become holes, so large mostly-empty images cost little disk.
    """
    import zstandard

    src = IMAGES / f"{name}.zst"
    out = dest / name
    chunk = 1 << 16
    zero = bytes(chunk)
    with open(src, "rb") as fi, open(out, "wb") as fo:
        reader = zstandard.ZstdDecompressor().stream_reader(fi)
        while True:
            block = reader.read(chunk)
            if not block:
                break
            if block == zero[:len(block)]:
                fo.seek(len(block), os.SEEK_CUR)
            else:
                fo.write(block)
        fo.truncate()
    return out


def sha256_file(path: str | os.PathLike[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LoopMount:
    """Mount an image (a copy: the host may replay a journal) read-only through the
    host kernel, as the reference for what Linux shows. Needs root."""

    def __init__(self, image: str | os.PathLike[str], where: Path, offset: int = 0,
                 options: str = "ro") -> None:
        self.image = os.fspath(image)
        self.where = where
        self.offset = offset
        self.options = options

    def __enter__(self) -> Path:
        need_root()
        self.where.mkdir(parents=True, exist_ok=True)
        opts = f"loop,{self.options}" + (f",offset={self.offset}" if self.offset else "")
        run("mount", "-o", opts, self.image, self.where)
        return self.where

    def __exit__(self, *exc: object) -> None:
        run("umount", self.where, check=False)
