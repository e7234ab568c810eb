"""Lookups give the same answers before and after readdir has walked a directory.

xfs (leaf and node directories) and btrfs keep the names a complete readdir met and
answer later lookups from them; ext4 keeps its parsed directory. A directory looked up
often (LOOKUPS_FOR_TABLE names), or a small one (SMALL_DIR_BYTES) at its first lookup, has
its names read into a table. A lookup of a name the
dentry cache has not seen must find the same inode (or none) every way: one by one (the
hashed searches), from the table, after readdir; subvolume entries included, and a
damaged block must not lose the names of the others.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from helpers import run, unpack_image

import kernel
import kernel.vfs.inode
from kernel import Kernel

MODES = ("one by one", "table", "readdir")


@pytest.fixture
def set_mode(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """``set_mode(mode)``: "one by one" never builds a name table (each lookup searches)."""
    def apply(mode: str) -> None:
        alone = mode == "one by one"
        monkeypatch.setattr(kernel.vfs.inode, "LOOKUPS_FOR_TABLE", 1 << 30 if alone else 4)
        monkeypatch.setattr(kernel.vfs.inode, "SMALL_DIR_BYTES", -1 if alone else 8192)
    return apply


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


def _every_way(image: Path, paths: list[str], set_mode) -> list[dict[str, object]]:  # noqa: ANN001
    """``_walk`` in a fresh kernel for each of MODES."""
    results = []
    for mode in MODES:
        set_mode(mode)
        with Kernel(mb=32) as k:
            root = k.mount_dev(k.disk_add(image, readonly=True))
            results.append(_walk(k, root, mode == "readdir", paths))
    return results


@pytest.mark.parametrize("name", ["btrfs-features.img", "btrfs-basic.img", "xfs-v5.img",
                                  "xfs-v4.img", "ext4-largedir.img"])
def test_same_inodes_every_way(tmp_path: Path, name: str, set_mode) -> None:  # noqa: ANN001
    image = unpack_image(name, tmp_path)
    paths = _names_in(image, 4000)
    assert len(paths) > 8
    results = _every_way(image, paths, set_mode)
    assert results[0] == results[1] == results[2]
    assert all(v == errno.ENOENT for p, v in results[1].items() if p.endswith(".missing"))


def _one_dir(tmp_path: Path, names: list[str], mib: int) -> tuple[Path, Path]:
    """A source tree of one directory ``d`` holding ``names``, and an empty image file."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i, name in enumerate(names):
        (src / "d" / name).write_bytes(b"%d" % i)
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(mib << 20)
    return src, image


def test_damaged_block_loses_only_its_names(tmp_path: Path, set_mode) -> None:  # noqa: ANN001
    """ext4: a hashed directory with one leaf block failing its checksum. The table cannot
    be built; lookups fall back to the hashed search and find every name of the other
    blocks, exactly as one-by-one lookups do."""
    src, image = _one_dir(tmp_path, [f"file-{i:04d}-{'y' * 30}" for i in range(400)], 64)
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, image)
    run("e2fsck", "-fyD", image, check=False)  # -D: index the directory (an htree)
    out = run("debugfs", "-R", "blocks /d", image).stdout.split()
    blocks = [int(b) for b in out]
    assert len(blocks) > 4  # a root, leaves
    with open(image, "r+b") as f:  # a leaf in the middle: damage an entry's name
        f.seek(blocks[len(blocks) // 2] * 4096 + 200)
        f.write(b"\xff" * 8)
    paths = [f"d/{n}" for n in sorted(os.listdir(src / "d"))]
    results = []
    for mode in ("one by one", "table"):
        set_mode(mode)
        with Kernel(mb=32) as k:
            root = k.mount_dev(k.disk_add(image, readonly=True))
            got: dict[str, object] = {}
            for p in paths:
                try:
                    got[p] = k.sys.lstat(f"{root}/{p}").st_ino
                except OSError as e:
                    got[p] = ("error", e.errno)
            results.append(got)
    assert results[0] == results[1]
    lost = {v for v in results[1].values() if isinstance(v, tuple)}
    assert lost <= {("error", errno.EBADMSG), ("error", errno.EUCLEAN)}, lost
    nlost = sum(isinstance(v, tuple) for v in results[1].values())
    assert 0 < nlost < len(paths) // 3  # the damaged block's names only


def test_big_btrfs_directory(tmp_path: Path, set_mode) -> None:  # noqa: ANN001
    """A directory over many leaves: names found after a resumed readdir, and absent ones."""
    src, image = _one_dir(tmp_path, [f"name-{i:05d}-{'x' * (i % 40)}" for i in range(3000)], 256)
    run("mkfs.btrfs", "-q", "-f", "--rootdir", src, image)
    paths = [f"d/{n}" for n in sorted(os.listdir(src / "d"))]
    results = _every_way(image, paths, set_mode)
    assert results[0] == results[1] == results[2]
    assert len({v for p, v in results[1].items() if not p.endswith(".missing")}) == 3000
