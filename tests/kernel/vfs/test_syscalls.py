"""System call details the random comparison with the host does not reach."""

from __future__ import annotations

import errno
import itertools
import os
import random
from pathlib import Path

import pytest
from helpers import unpack_image

import kernel
from kernel import Kernel


@pytest.fixture
def k():
    with Kernel(mb=8) as kern:
        yield kern


def test_symlink_chains_loop_after_40(k) -> None:
    s = k.sys
    s.mkdir("/t", 0o755)
    s.close(s.open("/t/target", os.O_CREAT | os.O_WRONLY, 0o644))
    s.symlink("target", "/t/l0")
    for i in range(1, 41):
        s.symlink(f"l{i - 1}", f"/t/l{i}")
    assert s.stat("/t/l39").st_mode & 0o170000 == 0o100000  # 40 links: still fine
    with pytest.raises(OSError) as e:
        s.stat("/t/l40")  # 41 links
    assert e.value.errno == errno.ELOOP
    s.symlink("self", "/t/self")
    with pytest.raises(OSError) as e:
        s.open("/t/self/x", os.O_RDONLY)
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError) as e:
        s.open("/t/l0", os.O_RDONLY | os.O_NOFOLLOW)
    assert e.value.errno == errno.ELOOP


def test_dotdot_crosses_mount_points_and_stops_at_root(k, tmp_path: Path) -> None:
    image = unpack_image("ext4-ext3.img", tmp_path)
    disk = k.disk_add(image, readonly=True)
    root = k.mount_dev(disk)
    s = k.sys
    top = s.stat("/")
    assert s.stat(root + "/..").st_ino == s.stat("/mnt").st_ino
    assert s.stat(root + "/../..").st_ino == top.st_ino
    assert s.stat("/../../..").st_ino == top.st_ino
    inner = s.stat(root)
    assert inner.st_dev != top.st_dev and inner.st_ino == 2  # the ext root inode
    s.chdir(root)
    assert s.getcwd() == root.encode()
    assert s.stat("..").st_ino == s.stat("/mnt").st_ino
    # chroot into the mounted filesystem: '..' stops at the new root
    s.chroot(".")
    assert s.stat("/..").st_ino == inner.st_ino
    assert s.getcwd() == b"/"


def test_o_path_and_at_empty_path(k) -> None:
    s = k.sys
    s.mkdir("/d", 0o755)
    fd = s.open("/d/f", os.O_CREAT | os.O_WRONLY, 0o600)
    s.write(fd, b"12345")
    s.close(fd)
    s.symlink("f", "/d/l")
    p = s.open("/d/l", kernel.O_PATH | kernel.O_NOFOLLOW)
    st = s.fstatat(p, "", kernel.AT_EMPTY_PATH)
    assert st.st_mode & 0o170000 == 0o120000  # the link itself
    for call in (lambda: s.read(p, 1), lambda: s.write(p, b"x"), lambda: s.getdents64(p)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EBADF
    pf = s.open("/d/f", kernel.O_PATH)
    s.fchownat(pf, "", 7, 8, kernel.AT_EMPTY_PATH)
    s.utimensat(pf, "", ((1, 2), (3, 4)), kernel.AT_EMPTY_PATH)
    s.setxattrat(pf, "", kernel.AT_EMPTY_PATH, "user.k", b"v")
    st = s.stat("/d/f")
    assert (st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns) == (7, 8, 1_000_000_002, 3_000_000_004)
    assert s.getxattrat(pf, "", kernel.AT_EMPTY_PATH, "user.k") == b"v"
    s.linkat(pf, "", kernel.AT_FDCWD, "/d/hard", kernel.AT_EMPTY_PATH)
    assert s.stat("/d/hard").st_ino == st.st_ino and s.stat("/d/f").st_nlink == 2
    with pytest.raises(OSError) as e:
        s.fstatat(pf, "", 0)  # an empty path needs AT_EMPTY_PATH
    assert e.value.errno == errno.ENOENT
    dirfd = s.open("/d", kernel.O_PATH | kernel.O_DIRECTORY)
    assert s.fstatat(dirfd, "f", 0).st_size == 5  # O_PATH directories anchor *at calls


def test_getdents_cookies_resume_after_changes(k) -> None:
    s = k.sys
    s.mkdir("/big", 0o755)
    names = [f"n{i:03}".encode() for i in range(300)]
    for n in names:
        s.close(s.open(b"/big/" + n, os.O_CREAT | os.O_WRONLY, 0o644))
    fd = s.open("/big", os.O_RDONLY | os.O_DIRECTORY)
    first = s.getdents64(fd, 2048)  # a small buffer: several calls
    assert 0 < len(first) < 302
    cookie = first[-1].d_off
    s.unlink("/big/" + os.fsdecode(names[-1]))  # a change elsewhere in the directory
    rest = []
    while batch := s.getdents64(fd, 2048):
        rest.extend(batch)
    seen = [d.d_name for d in first + rest]
    assert sorted(seen) == sorted([b".", b".."] + names[:-1])
    assert len(seen) == len(set(seen))
    # lseek to a cookie resumes right after that entry
    s.lseek(fd, cookie, os.SEEK_SET)
    again = s.getdents64(fd, 1 << 16)
    assert [d.d_name for d in again] == [d.d_name for d in rest]
    s.lseek(fd, 0, os.SEEK_SET)
    with pytest.raises(OSError) as e:
        s.getdents64(fd, 10)  # not even one entry fits
    assert e.value.errno == errno.EINVAL


def test_statx_times_and_birth(k) -> None:
    s = k.sys
    fd = s.open("/f", os.O_CREAT | os.O_WRONLY, 0o644)
    s.close(fd)
    s.utimensat(kernel.AT_FDCWD, "/f", ((10, 123456789), (20, 987654321)))
    st = s.statx(kernel.AT_FDCWD, "/f", 0, kernel.STATX_ALL)
    assert st.st_atime_ns == 10_123_456_789 and st.st_mtime_ns == 20_987_654_321
    assert st.stx_mask & kernel.STATX_BTIME and st.st_birthtime_ns is not None
    assert st.stx_mask & kernel.STATX_MNT_ID


def test_umask_and_fd_numbers(k) -> None:
    s = k.sys
    assert s.umask(0o077) == 0o022
    fd1 = s.open("/a", os.O_CREAT | os.O_WRONLY, 0o666)
    assert s.fstat(fd1).st_mode & 0o777 == 0o600
    fd2 = s.open("/", os.O_RDONLY)
    s.close(fd1)
    fd3 = s.open("/", os.O_RDONLY)
    assert fd3 == fd1 and fd2 != fd1  # the lowest free descriptor
    with pytest.raises(OSError) as e:
        s.close(999)
    assert e.value.errno == errno.EBADF


def test_fd_numbers_lowest_free_with_many_holes(k) -> None:
    """Every open takes the lowest free number, checked against a model through closes at
    random among thousands of open descriptors (the table lklfuse keeps)."""
    s = k.sys
    rng = random.Random(11)
    held: set[int] = set()
    for _ in range(3000):
        held.add(s.open("/", kernel.O_PATH))
    base = min(held)  # the lowest free one before: the fixture's own are below it
    assert held == set(range(base, base + 3000))
    for _ in range(2000):
        if held and rng.random() < 0.5:
            fd = rng.choice(sorted(held))
            s.close(fd)
            held.discard(fd)
        else:
            fd = s.open("/", kernel.O_PATH)
            assert fd == next(n for n in itertools.count(base) if n not in held)
            held.add(fd)
    for fd in held:
        s.close(fd)


def test_open_unlinked_file_lives_until_close(k) -> None:
    s = k.sys
    fd = s.open("/tmpf", os.O_CREAT | os.O_RDWR, 0o644)
    s.write(fd, b"still here")
    s.unlink("/tmpf")
    with pytest.raises(FileNotFoundError):
        s.stat("/tmpf")
    assert s.pread64(fd, 100, 0) == b"still here"
    assert s.fstat(fd).st_nlink == 0
    s.close(fd)


def test_proc_self_fd_reopens_an_o_path_descriptor(k) -> None:
    s = k.sys
    fd = s.open("/f", os.O_CREAT | os.O_WRONLY, 0o644)
    s.write(fd, b"hello")
    s.close(fd)
    p = s.open("/f", kernel.O_PATH)
    rw = s.open(f"/proc/self/fd/{p}", os.O_RDWR)
    assert s.read(rw, 10) == b"hello"
    s.truncate(f"/proc/self/fd/{p}", 2)
    assert s.fstat(rw).st_size == 2
    s.chmod("/f", 0o444)
    s.setfsuid(1000)  # permission is checked again on the reopened file
    with pytest.raises(PermissionError):
        s.open(f"/proc/self/fd/{p}", os.O_WRONLY)
    s.setfsuid(0)
    with pytest.raises(FileNotFoundError):
        s.open("/proc/self/fd/999", os.O_RDONLY)


def _preadv_source(root: Path) -> dict[str, bytes]:
    """Files whose reads cross block edges, holes and the end of file."""
    import random

    rnd = random.Random(7)
    root.mkdir()
    files = {}
    for name, size in (("one", 1), ("block", 4096), ("odd", 4096 * 3 + 17), ("big", 300_000),
                       ("huge", 3 << 20)):
        data = rnd.randbytes(size)
        (root / name).write_bytes(data)
        files[name] = data
    with open(root / "sparse", "wb") as f:  # data, a hole of 1 MiB, data
        f.write(b"A" * 5000)
        f.seek(5000 + (1 << 20))
        f.write(b"B" * 9000)
    files["sparse"] = (root / "sparse").read_bytes()
    return files


@pytest.mark.parametrize("fstype", ["ext4", "ext2", "xfs", "btrfs"])
def test_preadv_and_readv_match_the_host(tmp_path: Path, fstype: str) -> None:
    """preadv/readv fill the caller's buffers (dirty ones too) exactly as the host's calls do,
    for every split of the buffers, offset and length, holes and the end of file."""
    import random

    from helpers import need_root, need_tool, run

    src = tmp_path / "src"
    files = _preadv_source(src)
    image = tmp_path / f"{fstype}.img"
    with open(image, "wb") as f:
        f.truncate((320 if fstype == "xfs" else 160) << 20)  # mkfs.xfs wants 300 MB
    if fstype in ("ext4", "ext2"):
        run(f"mkfs.{fstype}", "-q", "-F", "-d", src, image)
    elif fstype == "btrfs":
        need_tool("mkfs.btrfs")
        run("mkfs.btrfs", "-q", "-f", "--rootdir", src, image)
    else:
        need_root()
        need_tool("mkfs.xfs")
        run("mkfs.xfs", "-q", "-f", image)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        run("mount", "-o", "loop", image, mnt)
        try:
            run("cp", "-a", f"{src}/.", mnt)
        finally:
            run("umount", mnt)
    rnd = random.Random(11)
    with Kernel(mb=8) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True))
        s = k.sys
        for name, data in files.items():
            fd = s.open(f"{root}/{name}")
            hfd = os.open(src / name, os.O_RDONLY)
            try:
                cases = [(0, [len(data)]), (0, [len(data) + 100]), (len(data), [10]),
                         (4096, [4096, 4096]), (1, [4095, 1, 8192])]
                for _ in range(40):
                    off = rnd.choice([0, 4096, 8192, rnd.randrange(0, len(data) + 1)])
                    cases.append((off, [rnd.choice([1, 511, 4096, 5000, 70_000, 1 << 20])
                                        for _ in range(rnd.randint(1, 3))]))
                for off, lengths in cases:
                    ours = [bytearray(b"\xee" * n) for n in lengths]  # dirty: holes must be zeroed
                    host = [bytearray(b"\xee" * n) for n in lengths]
                    assert s.preadv(fd, ours, off) == os.preadv(hfd, host, off), (name, off)
                    assert ours == host, (name, off, lengths)
                # readv moves the file position, as read does
                s.lseek(fd, 3, kernel.SEEK_SET)
                os.lseek(hfd, 3, os.SEEK_SET)
                ours, host = [bytearray(7000)], [bytearray(7000)]
                assert s.readv(fd, ours) == os.readv(hfd, host)
                assert ours == host and s.lseek(fd, 0, kernel.SEEK_CUR) == os.lseek(hfd, 0, os.SEEK_CUR)
            finally:
                os.close(hfd)
                s.close(fd)
        with pytest.raises(OSError) as e:
            s.preadv(s.open(f"{root}/one"), [b"read-only"], 0)
        assert e.value.errno == errno.EFAULT
