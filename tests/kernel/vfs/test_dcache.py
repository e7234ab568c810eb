"""The dentry cache stays bounded on big trees and stays correct while it shrinks."""

from __future__ import annotations

import os

import pytest

from kernel import Kernel
from kernel.vfs import dcache


@pytest.fixture
def small_dcache(monkeypatch):
    monkeypatch.setattr(dcache, "DCACHE_LIMIT", 500)
    dcache._lru.clear()


def _count(d) -> int:
    return sum(1 + _count(c) for c in (d.children or {}).values())


def test_walking_many_files_keeps_the_cache_bounded(small_dcache) -> None:
    with Kernel(mb=4) as k:
        s = k.sys
        for i in range(20):
            s.mkdir(f"/d{i}", 0o755)
            for j in range(100):
                s.close(s.open(f"/d{i}/f{j}", os.O_CREAT | os.O_WRONLY, 0o644))
        held = s.open("/d0/f0", os.O_RDONLY)
        s.chdir("/d3")
        for i in range(20):
            for j in range(100):
                assert s.stat(f"/d{i}/f{j}").st_size == 0
        root = k.root_mount.root
        assert _count(root) <= dcache.DCACHE_LIMIT + 100
        # pruned names are looked up again, right
        assert s.stat("/d0/f0").st_ino == s.fstat(held).st_ino
        assert s.getcwd() == b"/d3"
        s.rename("/d3/f5", "/d3/g5")
        with pytest.raises(FileNotFoundError):
            s.stat("f5")
        assert s.stat("g5").st_size == 0
        s.close(held)


def test_a_directory_linked_into_its_own_subtree_is_eloop(tmp_path) -> None:
    """d_splice_alias's rule: looking up a directory that is already one of the dentry's
    ancestors (a damaged image's directory hard link) is ELOOP, so that no walk of the tree
    goes round for ever; the rest of the tree reads as before and the image is unchanged."""
    import errno

    from helpers import sha256_file, unpack_image

    import kernel

    image = unpack_image("damaged-ext4-directory-loop.img", tmp_path)
    before = sha256_file(image)
    with Kernel(mb=16) as k:
        s = k.sys
        root = k.mount_dev(k.disk_add(image, readonly=True), flags=kernel.MS_RDONLY)
        a = s.stat(f"{root}/a")
        fd = s.open(f"{root}/a/b", kernel.O_RDONLY | kernel.O_DIRECTORY)
        names = sorted(e.d_name for e in s.getdents64(fd) if e.d_name not in (b".", b".."))
        s.close(fd)
        assert b"loop" in names
        for path in (f"{root}/a/b/loop", f"{root}/a/b/loop/b", f"{root}/a/b/loop/"):
            with pytest.raises(OSError) as e:
                s.lstat(path)
            assert e.value.errno == errno.ELOOP
            assert "directory loop" in str(e.value)
        assert s.stat(f"{root}/a").st_ino == a.st_ino  # the directory itself is fine
        for name in names:
            if name != b"loop":
                s.lstat(f"{root}/a/b/{os.fsdecode(name)}")
    assert sha256_file(image) == before
