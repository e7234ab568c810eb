"""Reading every committed image through kernel.sys against its reference manifest."""

from __future__ import annotations

import errno
import os
import re

import pytest
import treeutil
from helpers import IMAGES, need_tool, run

import kernel
from kernel import Kernel

V4_FIELDS = tuple(f for f in treeutil.DEFAULT_FIELDS if f != "mtime_ns")


def mount(k: Kernel, img: os.PathLike[str], options: str = "") -> str:
    disk = k.disk_add(img, readonly=True)
    return k.mount_dev(disk, flags=kernel.MS_RDONLY, options=options)


@pytest.mark.parametrize("name", ["xfs-v5", "xfs-1k", "xfs-64k"])
def test_tree_matches_host_mount(xfs_image, name: str) -> None:
    """Every entry, byte, xattr, ACL, link and timestamp as the host kernel showed them."""
    expected = treeutil.load(IMAGES / f"{name}.json")
    with Kernel(mb=32) as k:
        root = mount(k, xfs_image(name))
        assert k.fstype_of(root) == "xfs"
        got = treeutil.kernel_manifest(k.sys, root)
    assert treeutil.diff_manifests(treeutil.project(expected), treeutil.project(got)) == []


def test_v4_tree_matches_protofile(xfs_image) -> None:
    """V4 (no CRC, no ftype, 256-byte inodes): the protofile's tree (mkfs sets the times)
    with the attributes xfs_db set in short, leaf, node and remote form."""
    expected = treeutil.load(IMAGES / "xfs-v4.json")
    with Kernel(mb=32) as k:
        root = mount(k, xfs_image("xfs-v4"))
        got = treeutil.kernel_manifest(k.sys, root)
        # without ftype, getdents reports DT_UNKNOWN as Linux does (but "." and ".." are
        # DT_DIR in a short-form directory)
        fd = k.sys.open(root, kernel.O_RDONLY | kernel.O_DIRECTORY)
        types = {d.d_name: d.d_type for d in k.sys.getdents64(fd)}
        k.sys.close(fd)
        st = k.sys.lstat(root + "/hello.txt")
    assert treeutil.diff_manifests(treeutil.project(expected, V4_FIELDS),
                                   treeutil.project(got, V4_FIELDS)) == []
    assert {t for n, t in types.items() if n not in (b".", b"..")} == {0}
    assert st.st_birthtime_ns is None


def test_formats_covered(xfs_meta) -> None:
    """The images hold every fork format the issue lists (xfs_db's word, recorded by the script)."""
    ino = xfs_meta("xfs-v5")["inodes"]
    assert ino["fragmented.bin"]["format"] == "3" and int(ino["fragmented.bin"]["nextents"]) > 1000
    assert ino["dirs/sf"]["format"] == "1"
    assert ino["links/short"]["format"] == "1" and ino["links/long"]["format"] == "2"
    assert ino["xattrs/sf"]["aformat"] == "1"
    assert int(ino["xattrs/node"]["naextents"]) > 1
    assert int(ino["big-reflink.bin"]["nextents"]) > 1


def _sample(expected: dict, kind: str) -> list[str]:
    return [p for p, e in sorted(expected.items()) if e["type"] == kind]


@pytest.mark.parametrize("dirname", ["dirs/sf", "dirs/block", "dirs/leaf", "dirs/node"])
def test_lookup_and_readdir_every_format(xfs_image, dirname: str) -> None:
    """Hashed lookups find every name and miss near-misses; getdents resumes from d_off."""
    expected = treeutil.load(IMAGES / "xfs-v5.json")
    names = sorted(p.rsplit("/", 1)[1] for p in expected if p.startswith(dirname + "/")
                   and "/" not in p[len(dirname) + 1:])
    with Kernel(mb=32) as k:
        root = mount(k, xfs_image("xfs-v5"))
        d = f"{root}/{dirname}"
        for n in names:
            st = k.sys.lstat(f"{d}/{n}")
            assert st.st_size == (expected[f"{dirname}/{n}"]["size"] or st.st_size)
        for n in names[:50]:
            for miss in (n + "_", n.upper(), n[:-1] or "zz"):
                if miss not in names:
                    with pytest.raises(FileNotFoundError):
                        k.sys.lstat(f"{d}/{miss}")
        fd = k.sys.open(d, kernel.O_RDONLY | kernel.O_DIRECTORY)
        seen: list[bytes] = []
        offs: list[int] = []
        while True:
            batch = k.sys.getdents64(fd, 200)
            if not batch:
                break
            seen += [e.d_name for e in batch]
            offs += [e.d_off for e in batch]
            for e in batch:
                if e.d_name not in (b".", b".."):
                    mode = k.sys.lstat(f"{d}/{os.fsdecode(e.d_name)}").st_mode
                    assert e.d_type == mode >> 12  # ftype gives d_type without a stat
        # resuming from any entry's d_off continues right after it
        mid = len(offs) // 2
        k.sys.lseek(fd, offs[mid], kernel.SEEK_SET)
        rest = []
        while batch := k.sys.getdents64(fd):
            rest += [e.d_name for e in batch]
        k.sys.close(fd)
    assert sorted(os.fsdecode(n) for n in seen if n not in (b".", b"..")) == names
    assert seen[:2] == [b".", b".."]
    assert rest == seen[mid + 1:]
    assert offs == sorted(offs) and len(set(offs)) == len(offs)


def test_holes_unwritten_and_reflink(xfs_image) -> None:
    """Unwritten extents read as zeros and report as holes; shared extents read normally."""
    with Kernel(mb=32) as k:
        root = mount(k, xfs_image("xfs-v5"))
        fd = k.sys.open(root + "/prealloc.bin", kernel.O_RDONLY)
        data = k.sys.pread64(fd, 1 << 20, 0)
        assert data[:300000] == bytes(300000) and data[310000:] == bytes(len(data) - 310000)
        assert data[300000:300010] != bytes(10)
        assert k.sys.lseek(fd, 0, kernel.SEEK_DATA) >= 4096 * (300000 // 4096) - 4096
        k.sys.close(fd)
        fd = k.sys.open(root + "/sparse.bin", kernel.O_RDONLY)
        assert k.sys.lseek(fd, 0, kernel.SEEK_HOLE) == 8192
        assert k.sys.lseek(fd, 8192, kernel.SEEK_DATA) == 1 << 20
        k.sys.close(fd)
        a = k.sys.open(root + "/fragmented.bin", kernel.O_RDONLY)
        b = k.sys.open(root + "/fragmented-reflink.bin", kernel.O_RDONLY)
        assert k.sys.pread64(a, 1 << 24, 0) == k.sys.pread64(b, 1 << 24, 0)


def test_statx_times_and_statfs(xfs_image) -> None:
    """Birth times on v5, bigtime and pre-1970 times, statfs geometry from xfs_db."""
    need_tool("xfs_db")
    img = xfs_image("xfs-v5")
    sb = run("xfs_db", "-r", "-c", "sb 0", "-c", "print dblocks logblocks blocksize", img).stdout
    geo = {k: int(v) for k, v in re.findall(r"(\w+) = (\d+)", sb)}
    expected = treeutil.load(IMAGES / "xfs-v5.json")
    with Kernel(mb=32) as k:
        root = mount(k, img)
        st = k.sys.lstat(root + "/times/future")
        assert st.st_mtime_ns == expected["times/future"]["mtime_ns"] > 2**32 * 10**9
        assert k.sys.lstat(root + "/times/past").st_mtime_ns < 0
        assert k.sys.lstat(root + "/small.txt").st_birthtime_ns is not None
        fs = k.sys.statfs(root)
    assert fs.f_type == 0x58465342
    assert fs.f_bsize == geo["blocksize"]
    assert fs.f_blocks == geo["dblocks"] - geo["logblocks"]
    assert 0 < fs.f_bfree < fs.f_blocks


def test_acl_presented_as_linux_does(xfs_image) -> None:
    expected = treeutil.load(IMAGES / "xfs-v5.json")
    with Kernel(mb=32) as k:
        root = mount(k, xfs_image("xfs-v5"))
        names = k.sys.llistxattr(root + "/xattrs/acldir")
        acl = k.sys.lgetxattr(root + "/xattrs/acldir", "system.posix_acl_default")
    assert b"system.posix_acl_default" in names and b"trusted.SGI_ACL_DEFAULT" in names
    assert acl.hex() == expected["xattrs/acldir"]["xattrs"]["system.posix_acl_default"]


def test_realtime_file_refused(xfs_image, xfs_meta) -> None:
    meta = xfs_meta("xfs-rt")
    assert meta["rblocks"] > 0
    with Kernel(mb=32) as k:
        root = mount(k, xfs_image("xfs-rt"))
        assert k.sys.lstat(root + "/rtfile").st_ino == meta["realtime"]["rtfile"]
        fd = k.sys.open(root + "/rtfile", kernel.O_RDONLY)
        with pytest.raises(OSError) as ei:
            k.sys.read(fd, 10)
        assert ei.value.errno == errno.EOPNOTSUPP and "realtime" in str(ei.value)
        fd2 = k.sys.open(root + "/normal.txt", kernel.O_RDONLY)
        assert k.sys.read(fd2, 100) == b"on the data device\n"


def test_rw_mount_refused(xfs_copy) -> None:
    """Read-write mounts get EROFS with a clear message; unknown options get EINVAL."""
    img = xfs_copy("xfs-64k")
    before = img.read_bytes()[:1 << 20]
    with Kernel(mb=32) as k:
        disk = k.disk_add(img, readonly=False)
        with pytest.raises(OSError) as ei:
            k.mount_dev(disk, fstype="xfs")
        assert ei.value.errno == errno.EROFS
        assert "read-write mounts are not supported yet" in str(ei.value)
        with pytest.raises(OSError) as ei:
            k.mount_dev(disk, fstype="xfs", flags=kernel.MS_RDONLY, options="bogus")
        assert ei.value.errno == errno.EINVAL
        root = k.mount_dev(disk, fstype="xfs", flags=kernel.MS_RDONLY)
        assert k.sys.lstat(root + "/hello.txt").st_size > 0
    assert img.read_bytes()[:1 << 20] == before
