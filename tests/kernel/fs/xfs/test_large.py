"""The 100,000-entry directory and 64-bit inode numbers (short form with i8count)."""

from __future__ import annotations

import os
import random

import pytest
import treeutil
from helpers import IMAGES, need_tool, run

import kernel
from kernel import Kernel


@pytest.mark.slow
def test_100k_directory(xfs_image, xfs_meta) -> None:
    """A node-form directory in a btree fork: every name listed once, hashed lookups."""
    meta = xfs_meta("xfs-100k")["inodes"]["big"]
    assert meta["format"] == "3" and int(meta["nextents"]) > 21
    expected = treeutil.load(IMAGES / "xfs-100k.json")
    names = sorted(p[4:] for p in expected if p.startswith("big/"))
    assert len(names) == 100_000
    rng = random.Random(1)
    sample = rng.sample(names, 4000)
    missing = [n + "x" for n in rng.sample(names, 400)]

    def lookups(k: Kernel, root: str, part: int) -> None:
        """Names the dentry cache has not seen yet (part 0 or 1): the driver looks them up."""
        target = k.sys.lstat(root + "/target")
        assert target.st_nlink == expected["target"]["nlink"] == 100_001
        for n in sample[part::2]:
            assert k.sys.lstat(f"{root}/big/{n}").st_ino == target.st_ino
        for n in missing[part::2]:
            with pytest.raises(FileNotFoundError):
                k.sys.lstat(f"{root}/big/{n}")

    with Kernel(mb=64) as k:
        disk = k.disk_add(xfs_image("xfs-100k"), readonly=True)
        root = k.mount_dev(disk, flags=kernel.MS_RDONLY)
        lookups(k, root, 0)  # through the hash index
        fd = k.sys.open(root + "/big", kernel.O_RDONLY | kernel.O_DIRECTORY)
        seen = []
        first = k.sys.getdents64(fd, 4096)  # part of it, then a name from beyond it
        assert k.sys.lstat(f"{root}/big/{names[-1]}").st_nlink == 100_001
        seen += [os.fsdecode(e.d_name) for e in first]
        while batch := k.sys.getdents64(fd, 1 << 15):
            seen += [os.fsdecode(e.d_name) for e in batch]
        k.sys.close(fd)
        assert sorted(seen[2:]) == names and seen[:2] == [".", ".."]
        lookups(k, root, 1)  # from the names the walk met


def test_shortform_with_64bit_inode_numbers(tmp_path) -> None:
    """Made at test time (mkfs.xfs + protofile, no root, sparse): AGs over 512 GiB put
    directories at inode numbers above 2^32, so short-form parents and entries use 8 bytes."""
    need_tool("mkfs.xfs", "xfs_db")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"far away\n")
    lines = ["/d", "0 0", "d--755 0 0"]
    for d in range(6):
        lines += [f"dir{d} d--750 {d} {d}", f"file{d} ---640 {d} 0 {src / 'f'}", "sub d--755 0 0",
                  f"leaf ---600 0 0 {src / 'f'}", "$", "$"]
    lines.append("$")
    proto = tmp_path / "proto"
    proto.write_text("\n".join(lines) + "\n")
    img = tmp_path / "i8.img"
    with open(img, "wb") as f:
        f.truncate(1600 << 30)
    run("mkfs.xfs", "-q", "-f", "-d", "agsize=520g", "-l", "size=64m", "-p", proto, img)
    listing = run("xfs_db", "-r", "-c", "inode 128", "-c", "ls", img).stdout
    inos = {line.split()[-2]: int(line.split()[1]) for line in listing.splitlines()
            if line.split()[-1] == "(good)"}
    assert max(inos.values()) > 1 << 32
    with Kernel(mb=32) as k:
        disk = k.disk_add(img, readonly=True)
        root = k.mount_dev(disk, flags=kernel.MS_RDONLY)
        for d in range(6):
            st = k.sys.lstat(f"{root}/dir{d}")
            assert st.st_ino == inos[f"dir{d}"]
            assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (d, d, 0o750)
            f = k.sys.open(f"{root}/dir{d}/sub/leaf", kernel.O_RDONLY)
            assert k.sys.read(f, 100) == b"far away\n"
            k.sys.close(f)
            assert k.sys.lstat(f"{root}/dir{d}/sub/..").st_ino == st.st_ino
            fd = k.sys.open(f"{root}/dir{d}", kernel.O_RDONLY | kernel.O_DIRECTORY)
            ents = {e.d_name: e.d_ino for e in k.sys.getdents64(fd)}
            k.sys.close(fd)
            assert ents[b".."] == 128 and ents[b"."] == st.st_ino
            assert set(ents) == {b".", b"..", f"file{d}".encode(), b"sub"}
