"""Directories: htree lookups through the index, readdir cookies, large_dir, inline."""

from __future__ import annotations

import errno
import hashlib

import pytest
from ext4util import expected, mount, readdir_names, unpack

import kernel
from kernel import Kernel


def _sb(k: Kernel, path: str):
    res, _ = k.sys._resolve(kernel.AT_FDCWD, path, True)
    return res.mnt.sb


@pytest.mark.slow
def test_largedir_three_level_htree(tmp_path) -> None:
    """36,000 entries under a 3-level index (large_dir), tea hash, unsigned chars."""
    exp = expected("largedir")
    summary = exp["big"]["huge"]
    assert exp["meta"]["htree"]["levels"] == 3
    img = unpack("largedir", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        sb = _sb(k, root)
        assert sb.unsigned_hash and sb.large_dir
        # a lookup walks root, two index levels and one leaf: a handful of blocks
        k.sys.lstat(root + "/huge.target")
        for name in summary["sample"]:
            before = k.bcache.misses
            st = k.sys.lstat(f"{root}/huge/{name}")
            assert k.bcache.misses - before <= 4, "lookup did not use the htree index"
            assert st.st_ino == k.sys.lstat(root + "/huge.target").st_ino
        with pytest.raises(FileNotFoundError):
            k.sys.lstat(root + "/huge/" + "not-there-" + "l" * 200)
        entries = readdir_names(k, root + "/huge")
        names = [n.decode() for n, _i, _o in entries]
        assert len(names) == summary["count"]
        assert hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest() == summary["names_sha256"]
        assert hashlib.sha256("\n".join(names).encode()).hexdigest() == summary["order_sha256"]
        offs = [o for _n, _i, o in entries]
        assert offs == sorted(offs) and len(set(offs)) == len(offs)
        # the depth-2 extent tree reads back what the host wrote
        fd = k.sys.open(root + "/deep-extents", kernel.O_RDONLY)
        data = k.sys.read(fd, 1 << 24)
        k.sys.close(fd)
        assert hashlib.sha256(data).hexdigest() == exp["tree"]["deep-extents"]["sha256"]
        assert exp["meta"]["extent_depth"] == 2
        uni = readdir_names(k, root + "/ünïcödé".encode().decode())
        assert sorted(n.decode() for n, _i, _o in uni) == sorted(
            p.split("/", 1)[1] for p in exp["tree"] if p.startswith("ünïcödé/"))


def test_htree_lookup_reads_few_blocks(tmp_path) -> None:
    """basic: a lookup in the 20,000-entry directory without a readdir first."""
    exp = expected("basic")
    img = unpack("basic", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        k.sys.lstat(root + "/big.target")
        for name in exp["big"]["big"]["sample"]:
            before = k.bcache.misses
            k.sys.lstat(f"{root}/big/{name}")
            assert k.bcache.misses - before <= 3


@pytest.mark.parametrize("name, path", [("basic", "big"), ("basic", "dir"), ("ext2", "linear"),
                                        ("inline", "tiny-dir"), ("inline", "grown-dir")])
def test_readdir_cookies_resume(name: str, path: str, tmp_path) -> None:
    """Reading in small batches, or seeking to any returned d_off, continues exactly."""
    img = unpack(name, tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        full = readdir_names(k, f"{root}/{path}")
        small = readdir_names(k, f"{root}/{path}", count=300)
        assert small == full
        offs = [o for _n, _i, o in full]
        assert offs == sorted(offs) and len(set(offs)) == len(offs)
        fd = k.sys.open(f"{root}/{path}", kernel.O_RDONLY | kernel.O_DIRECTORY)
        try:
            for i in range(0, len(full), max(1, len(full) // 7)):
                k.sys.lseek(fd, full[i][2], kernel.SEEK_SET)
                rest: list[tuple[bytes, int, int]] = []
                while batch := k.sys.getdents64(fd, 1 << 16):
                    rest.extend((d.d_name, d.d_ino, d.d_off) for d in batch)
                assert rest == full[i + 1:]
        finally:
            k.sys.close(fd)


def test_inline_directory_and_files(tmp_path) -> None:
    exp = expected("inline")["tree"]
    img = unpack("inline", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        got = sorted(n.decode() for n, _i, _o in readdir_names(k, root + "/tiny-dir"))
        assert got == ["x"]
        assert k.sys.readlink(root + "/inline-symlink").decode() == exp["inline-symlink"]["target"]
        fd = k.sys.open(root + "/inline-150", kernel.O_RDONLY)
        assert hashlib.sha256(k.sys.read(fd, 1000)).hexdigest() == exp["inline-150"]["sha256"]
        k.sys.close(fd)


def test_casefold_and_encrypt_refused(tmp_path) -> None:
    img = unpack("crypt", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        fd = k.sys.open(root + "/plain", kernel.O_RDONLY)
        assert k.sys.read(fd, 100) == b"readable\n"
        k.sys.close(fd)
        assert k.sys.lstat(root + "/folded").st_mode & 0o170000 == 0o040000
        for path in ("/folded", "/secret"):
            with pytest.raises(OSError) as e:
                readdir_names(k, root + path)
            assert e.value.errno == errno.EOPNOTSUPP
            assert ("casefold" if path == "/folded" else "encrypt") in str(e.value)
        with pytest.raises(OSError) as e:
            k.sys.lstat(root + "/folded/MixedCase")
        assert e.value.errno == errno.EOPNOTSUPP
