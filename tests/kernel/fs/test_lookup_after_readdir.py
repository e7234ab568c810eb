"""Lookups give the same answers before and after readdir has walked a directory.

xfs (leaf and node directories) and btrfs keep the names a complete readdir met and
answer later lookups from them; ext4 keeps its parsed directory. A lookup of a name the
dentry cache has not seen must find the same inode (or none) either way, subvolume
entries included.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from helpers import run, unpack_image

import kernel
from kernel import Kernel


def _walk(k: Kernel, root: str, readdir_first: bool, paths: list[str]) -> dict[str, object]:
    """lstat of every path (and of a name next to it that does not exist)."""
    s = k.sys
    if readdir_first:  # the directories stay open, as they do in a walk
        for p in sorted({os.path.dirname(p) for p in paths}, key=len):
            fd = s.open(f"{root}/{p}".rstrip("/"), kernel.O_RDONLY | kernel.O_DIRECTORY)
            while s.getdents64(fd, 4096):  # small batches: the walk resumes many times
                pass
    out: dict[str, object] = {}
    for p in paths:
        st = s.lstat(f"{root}/{p}")
        out[p] = (st.st_ino, st.st_dev, st.st_mode, st.st_size)
        try:
            s.lstat(f"{root}/{p}.missing")
            out[p + ".missing"] = "found"
        except OSError as e:
            out[p + ".missing"] = e.errno
    return out


def _names_in(image: Path, limit: int) -> list[str]:
    """Paths in the image (a walk by a kernel of its own), at most ``limit``."""
    out: list[str] = []
    with Kernel(mb=32) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True))
        todo = [""]
        while todo and len(out) < limit:
            d = todo.pop()
            fd = k.sys.open(f"{root}/{d}".rstrip("/"), kernel.O_RDONLY | kernel.O_DIRECTORY)
            while batch := k.sys.getdents64(fd):
                for e in batch:
                    if e.d_name in (b".", b".."):
                        continue
                    p = f"{d}/{os.fsdecode(e.d_name)}".lstrip("/")
                    out.append(p)
                    if e.d_type == kernel.DT_DIR:
                        todo.append(p)
            k.sys.close(fd)
    return sorted(out[:limit])


def _both_ways(image: Path, paths: list[str]) -> list[dict[str, object]]:
    """``_walk`` in a fresh kernel without, then with, a readdir first."""
    results = []
    for readdir_first in (False, True):
        with Kernel(mb=32) as k:
            root = k.mount_dev(k.disk_add(image, readonly=True))
            results.append(_walk(k, root, readdir_first, paths))
    return results


@pytest.mark.parametrize("name", ["btrfs-features.img", "btrfs-basic.img", "xfs-v5.img",
                                  "xfs-v4.img", "ext4-largedir.img"])
def test_same_inodes_with_and_without_readdir(tmp_path: Path, name: str) -> None:
    image = unpack_image(name, tmp_path)
    paths = _names_in(image, 4000)
    assert len(paths) > 8
    results = _both_ways(image, paths)
    assert results[0] == results[1]
    assert all(v == errno.ENOENT for p, v in results[1].items() if p.endswith(".missing"))


def test_big_btrfs_directory(tmp_path: Path) -> None:
    """A directory over many leaves: names found after a resumed readdir, and absent ones."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(3000):
        (src / "d" / f"name-{i:05d}-{'x' * (i % 40)}").write_bytes(b"%d" % i)
    image = tmp_path / "b.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    run("mkfs.btrfs", "-q", "-f", "--rootdir", src, image)
    paths = [f"d/{n}" for n in sorted(os.listdir(src / "d"))]
    results = _both_ways(image, paths)
    assert results[0] == results[1]
    assert len({v for p, v in results[1].items() if not p.endswith(".missing")}) == 3000
