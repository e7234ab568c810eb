"""Fixtures for the XFS tests: committed images unpacked (sparsely) once per session."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import IMAGES

_ZERO = bytes(1 << 20)


def unpack_sparse(name: str, dest: Path) -> Path:
    """Decompress ``tests/images/<name>.img.zst`` to ``dest``, leaving zero runs as holes."""
    import zstandard

    out = dest / f"{name}.img"
    with open(IMAGES / f"{name}.img.zst", "rb") as fi, open(out, "wb") as fo:
        reader = zstandard.ZstdDecompressor().stream_reader(fi)
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            if chunk == _ZERO[:len(chunk)]:
                fo.seek(len(chunk), 1)
            else:
                fo.write(chunk)
        fo.truncate()
    out.chmod(0o444)
    return out


@pytest.fixture(scope="session")
def xfs_image(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``xfs_image("xfs-v5")``: the path of a read-only unpacked copy (shared by tests)."""
    cache: dict[str, Path] = {}
    base = tmp_path_factory.mktemp("xfs-images")

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = unpack_sparse(name, base)
        return cache[name]

    return get


@pytest.fixture
def xfs_copy(tmp_path: Path) -> Callable[[str], Path]:
    """``xfs_copy("xfs-v5")``: a private writable copy, for corruption tests."""

    def get(name: str) -> Path:
        p = unpack_sparse(name, tmp_path)
        p.chmod(0o644)
        return p

    return get


@pytest.fixture(scope="session")
def xfs_meta() -> Callable[[str], dict]:
    """What the image script recorded from xfs_db about an image (``<name>.meta.json``)."""
    return lambda name: json.loads((IMAGES / f"{name}.meta.json").read_text())
