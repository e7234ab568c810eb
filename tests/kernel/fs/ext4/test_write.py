"""The ext4 write path: every operation through kernel.sys on images made by mkfs.ext4, then
e2fsck -fn clean and the tree read back (by our kernel, by debugfs and by the host kernel)
equal to what was written."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ext4util import host_fallocate, read_file, unpack, write_file
from helpers import LoopMount, need_root, need_tool, run
from treeutil import diff_manifests, host_manifest, kernel_manifest, project

import kernel
from kernel import Kernel

# (label, mkfs arguments, size in MiB): the defaults and the older layouts
CONFIGS = {
    "ext4": (["-t", "ext4"], 64),
    "ext4-1k": (["-t", "ext4", "-b", "1024", "-I", "128"], 32),
    "ext4-32bit": (["-t", "ext4", "-O", "^64bit,^metadata_csum,uninit_bg"], 64),
    "ext3": (["-t", "ext3"], 32),
    "ext2": (["-t", "ext2"], 32),
}
FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "nlink", "rdev", "links")


def mkfs(path: Path, config: str, extra: list[str] | None = None) -> Path:
    need_tool("mke2fs")
    args, mib = CONFIGS[config]
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    run("mke2fs", "-q", "-F", *args, *(extra or []), path)
    return path


def fsck(img: Path) -> str:
    """e2fsck -fn must find nothing; returns its output."""
    need_tool("e2fsck")
    proc = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def mount_rw(k: Kernel, img: Path) -> str:
    return k.mount_dev(k.disk_add(img, readonly=False))


def listdir(s, path: str) -> list[bytes]:
    fd = s.open(path, kernel.O_RDONLY | kernel.O_DIRECTORY)
    out = []
    try:
        while batch := s.getdents64(fd, 32768):
            out.extend(d.d_name for d in batch if d.d_name not in (b".", b".."))
    finally:
        s.close(fd)
    return out


def populate(s, root: str, host: Path) -> None:
    """The same tree through kernel.sys and on the host."""
    rnd = hashlib.sha256(b"seed")

    def data(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            nonlocal rnd
            rnd = hashlib.sha256(rnd.digest())
            out += rnd.digest() * 64
        return bytes(out[:n])

    def both(rel: str, fn_k, fn_h) -> None:
        fn_k(f"{root}/{rel}")
        fn_h(host / rel)

    both("d", lambda p: s.mkdir(p, 0o755), lambda p: p.mkdir(0o755))
    both("d/sub", lambda p: (s.mkdir(p, 0o755), s.chmod(p, 0o2750)),
         lambda p: (p.mkdir(), os.chmod(p, 0o2750)))
    for i, n in enumerate((0, 1, 4095, 4096, 4097, 70000, 1 << 20, 3 * (1 << 20) + 17)):
        body = data(n)
        both(f"d/f{i}", lambda p, b=body: write_file(s, p, b), lambda p, b=body: p.write_bytes(b))
    # a sparse file: data, a hole, data past 1 GiB
    both("sparse", lambda p: write_file(s, p, b"head"), lambda p: p.write_bytes(b"head"))
    for off in (5 << 20, 40 << 20):
        fd = s.open(f"{root}/sparse", kernel.O_WRONLY)
        s.pwrite(fd, b"tail" * 100, off)
        s.close(fd)
        with open(host / "sparse", "r+b") as f:
            f.seek(off)
            f.write(b"tail" * 100)
    both("many", lambda p: s.mkdir(p, 0o755), lambda p: p.mkdir())
    for i in range(400):
        name = f"many/entry-{i:05d}-" + "x" * (i % 50)
        both(name, lambda p, i=i: write_file(s, p, str(i).encode()),
             lambda p, i=i: p.write_bytes(str(i).encode()))
    for i in range(0, 400, 3):
        name = f"many/entry-{i:05d}-" + "x" * (i % 50)
        both(name, s.unlink, os.unlink)
    both("fast", lambda p: s.symlink(b"d/f1", p), lambda p: os.symlink("d/f1", p))
    both("slow", lambda p: s.symlink(b"/" + b"y" * 300, p), lambda p: os.symlink("/" + "y" * 300, p))
    both("hard", lambda p: s.link(f"{root}/d/f2", p), lambda p: os.link(host / "d/f2", p))
    both("fifo", lambda p: s.mknod(p, 0o10644, 0), lambda p: os.mkfifo(p, 0o644))
    both("chr", lambda p: s.mknod(p, 0o20600, os.makedev(1, 3)),
         lambda p: os.mknod(p, 0o20600, os.makedev(1, 3)))
    both("blk", lambda p: s.mknod(p, 0o60600, os.makedev(259, 70000)),
         lambda p: os.mknod(p, 0o60600, os.makedev(259, 70000)))
    both("d/renamed", lambda p: s.rename(f"{root}/d/f3", p), lambda p: os.rename(host / "d/f3", p))
    both("moved-dir", lambda p: s.rename(f"{root}/d/sub", p), lambda p: os.rename(host / "d/sub", p))
    both("d/f5", lambda p: s.truncate(p, 10000), lambda p: os.truncate(p, 10000))
    both("d/f6", lambda p: s.truncate(p, 3 << 20), lambda p: os.truncate(p, 3 << 20))
    both("d/f0", lambda p: s.chmod(p, 0o4755), lambda p: os.chmod(p, 0o4755))
    both("d/f1", lambda p: s.chown(p, 1234, 5678), lambda p: os.chown(p, 1234, 5678))
    for name, value in ((b"user.small", b"v"), (b"user.medium", b"m" * 40),
                        (b"trusted.t", b"\0\1\2"), (b"user.large", b"L" * 600)):
        both("d/f4", lambda p, n=name, v=value: s.setxattr(p, n, v, 0),
             lambda p, n=name, v=value: os.setxattr(p, n, v))
    both("d/f4", lambda p: s.removexattr(p, b"user.medium"),
         lambda p: os.removexattr(p, b"user.medium"))


def _no_lost_found(m: dict) -> dict:
    """The image's tree without mkfs's lost+found (and the root's link to it)."""
    if m.pop("lost+found", None) is not None:
        m["."]["nlink"] -= 1
    return m


def _compare_kernel(img: Path, host: Path) -> None:
    with Kernel(mb=32) as k:
        root = k.mount_dev(k.disk_add(img, readonly=True), flags=kernel.MS_RDONLY)
        got = _no_lost_found(kernel_manifest(k.sys, root))
    want = host_manifest(host)
    fields = FIELDS + ("xattrs",)
    assert diff_manifests(project(got, fields, skip_root_mtime=True),
                          project(want, fields, skip_root_mtime=True)) == []


def _populate_and_check(img: Path, tmp_path: Path) -> Path:
    """populate() through our kernel and on a host directory; e2fsck clean and our kernel
    reads back the host's tree. Returns the host directory."""
    host = tmp_path / "host"
    host.mkdir()
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        populate(k.sys, root, host)
    fsck(img)
    _compare_kernel(img, host)
    return host


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_operations_fsck_clean_and_read_back(tmp_path: Path, config: str) -> None:
    """Files of every size, sparse files, a big directory with deletions, links, devices,
    renames, truncation, modes, owners and xattrs: e2fsck clean, and the tree read back
    by our kernel, by debugfs and by the host kernel is the tree written."""
    need_root()
    img = mkfs(tmp_path / "w.img", config)
    host = _populate_and_check(img, tmp_path)
    # debugfs: contents, modes and targets
    out = tmp_path / "rdump"
    out.mkdir()
    run("debugfs", "-R", f"rdump / {out}", img)
    got = host_manifest(out / "", xattrs=False)
    want = host_manifest(host, xattrs=False)
    for m in (got, want):
        m.pop("lost+found", None)
    fields = ("type", "size", "sha256", "target")
    # debugfs's rdump copies files, directories and symlinks (hard links as copies)
    want = {p: e for p, e in want.items() if e["type"] in ("reg", "dir", "lnk")}
    assert diff_manifests(project(got, fields), project(want, fields)) == []
    # the host kernel: everything, xattrs included
    with LoopMount(img, tmp_path / "mnt") as mnt:
        got = _no_lost_found(host_manifest(mnt))
    fields = FIELDS + ("xattrs",)
    assert diff_manifests(project(got, fields, skip_root_mtime=True),
                          project(host_manifest(host), fields, skip_root_mtime=True)) == []


def test_clean_flag_while_mounted_and_after(tmp_path: Path) -> None:
    """Mounted read-write the superblock says not clean; after unmount it is clean again,
    with free counts e2fsck agrees with."""
    img = mkfs(tmp_path / "c.img", "ext2")
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        write_file(k.sys, f"{root}/x", b"x" * 100000)
        k.sys.sync()
        state = run("dumpe2fs", "-h", img).stdout
        assert "not clean" in state
    state = run("dumpe2fs", "-h", img).stdout
    assert "Filesystem state:         clean" in state
    fsck(img)


def test_unlinked_open_file_lives_until_close(tmp_path: Path) -> None:
    img = mkfs(tmp_path / "o.img", "ext4")
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        free0 = s.statfs(root).f_bfree
        write_file(s, f"{root}/tmp", os.urandom(1 << 20))
        fd = s.open(f"{root}/tmp", kernel.O_RDWR)
        s.unlink(f"{root}/tmp")
        assert s.fstat(fd).st_nlink == 0
        s.pwrite(fd, b"still here", 0)
        assert s.pread(fd, 10, 0) == b"still here"
        assert s.statfs(root).f_bfree < free0
        s.close(fd)
        assert s.statfs(root).f_bfree == free0
    fsck(img)


def test_orphan_chain_of_many_unlinked_open_files(tmp_path: Path) -> None:
    """300 files unlinked while open, then closed in the order they were unlinked and at
    random: the on-disk orphan chain (s_last_orphan, then each inode's i_dtime) always
    holds exactly the files still open, each once; at the end it is empty and e2fsck -fn
    is clean."""
    import random

    img = mkfs(tmp_path / "o.img", "ext4")
    rng = random.Random(3)
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        fds = []
        for i in range(300):
            fd = s.open(f"{root}/t{i}", kernel.O_CREAT | kernel.O_RDWR, 0o600)
            s.write(fd, b"x" * 100)
            fds.append(fd)
        sb = s._file(fds[0]).inode.sb
        for i in range(300):
            s.unlink(f"{root}/t{i}")

        def chain() -> list[int]:
            out, ino = [], sb.last_orphan
            while ino:
                assert ino not in out
                out.append(ino)
                ino = sb._orphans[ino].orphan_next
            return out

        open_inos = {s.fstat(fd).st_ino: fd for fd in fds}
        order = fds[:100] + rng.sample(fds[100:], 200)  # oldest first, then at random
        for n, fd in enumerate(order):
            del open_inos[s.fstat(fd).st_ino]
            s.close(fd)
            if n % 7 == 0 or n > 290:
                assert sorted(chain()) == sorted(open_inos)
        assert sb.last_orphan == 0
    fsck(img)


def test_errors_as_linux(tmp_path: Path) -> None:
    img = mkfs(tmp_path / "e.img", "ext4")
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        s.mkdir(f"{root}/d", 0o755)
        write_file(s, f"{root}/d/f", b"1")
        for call, code in ((lambda: s.rmdir(f"{root}/d"), errno.ENOTEMPTY),
                           (lambda: s.mkdir(f"{root}/d", 0o755), errno.EEXIST),
                           (lambda: s.unlink(f"{root}/d"), errno.EISDIR),
                           (lambda: s.open(f"{root}/d/f/x", kernel.O_CREAT | kernel.O_WRONLY, 0o644),
                            errno.ENOTDIR),
                           (lambda: s.open(f"{root}/" + "n" * 256, kernel.O_CREAT | kernel.O_WRONLY,
                                           0o644), errno.ENAMETOOLONG),
                           (lambda: s.open(f"{root}/d/f", kernel.O_CREAT | kernel.O_EXCL
                                           | kernel.O_WRONLY, 0o644), errno.EEXIST),
                           (lambda: s.removexattr(f"{root}/d/f", b"user.none"), errno.ENODATA),
                           (lambda: s.setxattr(f"{root}/d/f", b"user.big", b"v" * 5000, 0),
                            errno.ENOSPC)):
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == code
        s.mkdir(f"{root}/e", 0o755)
        write_file(s, f"{root}/e/g", b"2")
        with pytest.raises(OSError) as e:
            s.rename(f"{root}/d", f"{root}/e")
        assert e.value.errno == errno.ENOTEMPTY
        s.unlink(f"{root}/e/g")
        s.rename(f"{root}/d", f"{root}/e")  # over an empty directory
        assert read_file(s, f"{root}/e/f") == b"1"
    fsck(img)


def test_rename_exchange_and_dotdot(tmp_path: Path) -> None:
    img = mkfs(tmp_path / "x.img", "ext4")
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        s.mkdir(f"{root}/a", 0o755)
        s.mkdir(f"{root}/a/dir", 0o755)
        s.mkdir(f"{root}/b", 0o755)
        write_file(s, f"{root}/b/file", b"file")
        s.renameat2(kernel.AT_FDCWD, f"{root}/a/dir", kernel.AT_FDCWD, f"{root}/b/file",
                    kernel.RENAME_EXCHANGE)
        assert read_file(s, f"{root}/a/dir") == b"file"
        assert s.stat(f"{root}/b/file/..").st_ino == s.stat(f"{root}/b").st_ino
        assert s.stat(f"{root}/a").st_nlink == 2 and s.stat(f"{root}/b").st_nlink == 3
        with pytest.raises(OSError) as e:
            s.renameat2(kernel.AT_FDCWD, f"{root}/a/dir", kernel.AT_FDCWD, f"{root}/b/file",
                        kernel.RENAME_NOREPLACE)
        assert e.value.errno == errno.EEXIST
    fsck(img)
    with LoopMount(img, tmp_path / "mnt") as mnt:
        assert (mnt / "a/dir").read_bytes() == b"file"
        assert os.stat(mnt / "b/file/..").st_ino == os.stat(mnt / "b").st_ino


@contextlib.contextmanager
def _new_file(tmp_path: Path) -> Iterator[tuple[Path, Any, int, Any]]:
    """A fresh ext4 image mounted read-write and a new file in it: (image, sys, its
    descriptor, its in-kernel inode, whose block map the tests look at)."""
    img = mkfs(tmp_path / "f.img", "ext4")
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        fd = s.open(f"{root}/f", kernel.O_CREAT | kernel.O_RDWR, 0o644)
        yield img, s, fd, s._file(fd).inode


def test_block_map_built_extent_by_extent_stays_merged_and_in_place(tmp_path: Path) -> None:
    """Single blocks written in random order (each one joining the run before it, the one
    after it, both or neither) keep the in-memory block map merged as the extent tree will
    hold it, and change that map in place: a file written extent by extent (a sparse or
    fragmented file: 40,000 extents took 25 s when every write copied the map) costs a list
    insert per extent. The data reads back and e2fsck -fn is clean."""
    import random

    rng = random.Random(5)
    order = list(range(0, 1200, 2)) + list(range(1, 400, 2))  # holes left in [400, 1200)
    rng.shuffle(order)
    blocks: dict[int, bytes] = {}
    with _new_file(tmp_path) as (img, s, fd, inode):
        bs = inode.sb.blocksize
        s.pwrite64(fd, b"\0" * bs, 0)  # the map exists from here on
        s.ftruncate(fd, 0)
        runs, starts = inode.runs(), inode._starts
        for n, lb in enumerate(order):
            data = rng.randbytes(bs)
            blocks[lb] = data
            assert s.pwrite64(fd, data, lb * bs) == bs
            if n % 100 == 99:
                s.fsync(fd)
        assert inode.runs() is runs and inode._starts is starts
        assert starts == [r[0] for r in runs]
        for a, b in zip(runs, runs[1:]):  # merged: no two runs that one extent could hold
            assert not (a[0] + a[1] == b[0] and a[2] + a[1] == b[2] and a[3] == b[3])
        mapped = {r[0] + i for r in runs for i in range(r[1])}
        assert mapped == set(blocks)
        s.ftruncate(fd, 1200 * bs)  # the last block, 1199, is a hole
        whole = s.pread64(fd, 1200 * bs, 0)
        s.close(fd)
    for lb in range(1200):
        assert whole[lb * bs:(lb + 1) * bs] == blocks.get(lb, bytes(bs)), lb
    fsck(img)


def test_preallocated_file_written_and_punched_at_random(tmp_path: Path) -> None:
    """A preallocated file (unwritten extents) written and hole-punched at random, as a
    database or a VM disk inside the image is: the block map changes in place (no copy of
    the whole map per write: random writes into a large preallocated file were quadratic),
    stays merged, reads back as a model of the file says, and e2fsck -fn is clean."""
    import random

    rng = random.Random(9)
    with _new_file(tmp_path) as (img, s, fd, inode):
        bs = inode.sb.blocksize
        nblocks = 3000
        s.fallocate(fd, 0, 0, nblocks * bs)
        model = bytearray(nblocks * bs)
        runs, starts = inode.runs(), inode._starts
        for n in range(1500):
            lb = rng.randrange(nblocks)
            if n % 10 == 9:  # punch a few blocks
                count = rng.randrange(1, 8)
                s.fallocate(fd, kernel.FALLOC_FL_PUNCH_HOLE | kernel.FALLOC_FL_KEEP_SIZE,
                            lb * bs, count * bs)
                model[lb * bs:(lb + count) * bs] = bytes(len(model[lb * bs:(lb + count) * bs]))
            else:  # part of a block or a few blocks
                off = lb * bs + rng.randrange(bs)
                data = rng.randbytes(rng.randrange(1, 3 * bs))
                data = data[:len(model) - off]
                assert s.pwrite64(fd, data, off) == len(data)
                model[off:off + len(data)] = data
            if n % 300 == 299:
                s.fsync(fd)
        assert inode.runs() is runs and inode._starts is starts
        assert starts == [r[0] for r in runs]
        for a, b in zip(runs, runs[1:]):
            assert a[0] + a[1] <= b[0]
            assert not (a[0] + a[1] == b[0] and a[2] + a[1] == b[2] and a[3] == b[3])
        whole = s.pread64(fd, len(model), 0)
        s.close(fd)
    assert whole == bytes(model)
    fsck(img)


def test_fallocate_punch_zero(tmp_path: Path) -> None:
    """Preallocation reads as zeros and takes blocks; punching frees them; zero range."""
    img = mkfs(tmp_path / "f.img", "ext4")
    host = tmp_path / "h"
    data = os.urandom(1 << 20)
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        write_file(s, f"{root}/f", data)
        host.write_bytes(data)
        fd = s.open(f"{root}/f", kernel.O_RDWR)
        hfd = os.open(host, os.O_RDWR)
        ops = [(0, 2 << 20, 1 << 20),  # extend with unwritten blocks
               (kernel.FALLOC_FL_PUNCH_HOLE | kernel.FALLOC_FL_KEEP_SIZE, 5000, 300000),
               (kernel.FALLOC_FL_ZERO_RANGE, 700000, 10),
               (kernel.FALLOC_FL_ZERO_RANGE | kernel.FALLOC_FL_KEEP_SIZE, 800000, 200000),
               (kernel.FALLOC_FL_KEEP_SIZE, 4 << 20, 1 << 20)]
        for mode, off, ln in ops:
            s.fallocate(fd, mode, off, ln)
            host_fallocate(hfd, mode, off, ln)
        s.pwrite(fd, b"inside", (2 << 20) + 4096)
        os.pwrite(hfd, b"inside", (2 << 20) + 4096)
        st = s.fstat(fd)
        assert st.st_size == os.fstat(hfd).st_size
        assert st.st_blocks * 512 >= (2 << 20)  # the preallocation beyond EOF is held
        s.close(fd)
        os.close(hfd)
        assert read_file(s, f"{root}/f") == host.read_bytes()
    fsck(img)


@pytest.mark.slow
def test_htree_grows_two_levels(tmp_path: Path) -> None:
    """3,000 long names in a 1 KiB-block directory: leaves split, the root fills and the
    index grows a level; every name is found, deletions too, and e2fsck checks the htree."""
    img = mkfs(tmp_path / "h.img", "ext4-1k")
    names = [f"{i:06d}-" + "n" * 60 for i in range(3000)]
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        s.mkdir(f"{root}/big", 0o755)
        for n in names:
            fd = s.open(f"{root}/big/{n}", kernel.O_CREAT | kernel.O_WRONLY, 0o600)
            s.close(fd)
        for n in names[::2]:
            s.unlink(f"{root}/big/{n}")
        listed = sorted(os.fsdecode(e) for e in listdir(s, f"{root}/big"))
        assert listed == sorted(names[1::2])
    out = fsck(img)
    assert "HTREE" not in out
    info = run("debugfs", "-R", "htree_dump /big", img).stdout
    assert "Indirect levels: 1" in info
    with LoopMount(img, tmp_path / "mnt") as mnt:
        assert sorted(os.listdir(mnt / "big")) == sorted(names[1::2])
        for n in names[1:200:2]:
            assert (mnt / "big" / n).exists()


def _dir_records(img: Path, path: str) -> list[list[tuple[int, int, bytes]]]:
    """Every block of directory ``path`` as its records (inode, rec_len, name), in disk order
    (read from the image file; the checksum tail is left out: its seed is random)."""
    import struct

    bs = int(re.search(r"Block size:\s+(\d+)",
                       run("dumpe2fs", "-h", img).stdout).group(1))  # type: ignore[union-attr]
    out = run("debugfs", "-R", f"blocks {path}", img).stdout.split()
    data = img.read_bytes()
    blocks = []
    for pblk in map(int, out):
        raw = data[pblk * bs:(pblk + 1) * bs]
        recs, off = [], 0
        while off < bs - 12:
            ino, rl, nl = struct.unpack_from("<IHB", raw, off)
            recs.append((ino, rl, raw[off + 8:off + 8 + nl]))
            off += rl
        blocks.append(recs)
    return blocks


class Forgetful(dict):  # type: ignore[type-arg]
    """A cache that keeps nothing: the code using it takes its slow path every time."""

    def __setitem__(self, key, value) -> None:  # type: ignore[no-untyped-def]
        pass


@pytest.mark.python_modules
@pytest.mark.parametrize("extra", [[], ["-O", "^dir_index"]], ids=["htree", "linear"])
def test_directory_inserts_place_entries_as_a_full_walk_does(tmp_path: Path, monkeypatch,
                                                            extra: list[str]) -> None:
    """Entries placed through the per-block hints, the cached index and the remembered
    hashes land in exactly the records a walk of every block would pick (first fit) and
    leaves split the same, through creates, unlinks and renames; the hints save walks."""
    import random

    from kernel.fs.ext4 import dirwrite

    base = mkfs(tmp_path / "base.img", "ext4-1k", extra)
    rng = random.Random(7)
    names = [f"{i}-".encode() + b"x" * rng.randrange(1, 80) for i in range(1200)]
    gone = rng.sample(names, 450)
    later = [f"late{i}-".encode() + b"y" * rng.randrange(1, 60) for i in range(400)]
    moves = rng.sample([n for n in names if n not in set(gone)], 80)

    def play(img: Path) -> int:
        walks = 0
        real_walk = dirwrite._walk

        def counting_walk(*a):  # type: ignore[no-untyped-def]
            nonlocal walks
            walks += 1
            return real_walk(*a)

        monkeypatch.setattr(dirwrite, "_walk", counting_walk)
        with Kernel(mb=32) as k:
            root = mount_rw(k, img)
            s = k.sys
            s.mkdir(f"{root}/d", 0o755)
            d = os.fsencode(root) + b"/d/"
            for n in names:
                s.close(s.open(d + n, kernel.O_CREAT | kernel.O_WRONLY, 0o600))
            creating = walks
            for n in gone:
                s.unlink(d + n)
            for n in later:
                s.close(s.open(d + n, kernel.O_CREAT | kernel.O_WRONLY, 0o600))
            for n in moves:
                s.rename(d + n, d + b"moved-" + n[::-1])
        monkeypatch.setattr(dirwrite, "_walk", real_walk)
        fsck(img)
        return creating

    hinted = tmp_path / "hinted.img"
    walked = tmp_path / "walked.img"
    hinted.write_bytes(base.read_bytes())
    walked.write_bytes(base.read_bytes())
    walks_hinted = play(hinted)
    real_init = dirwrite.DirState.__init__

    def init_without_hints(self, locs, free):  # type: ignore[no-untyped-def]
        real_init(self, locs, free)
        self.hints, self.dx, self.hashes = Forgetful(), Forgetful(), Forgetful()

    monkeypatch.setattr(dirwrite.DirState, "__init__", init_without_hints)
    walks_full = play(walked)
    assert _dir_records(hinted, "/d") == _dir_records(walked, "/d")
    assert walks_hinted * 3 < walks_full


@pytest.mark.python_modules
def test_allocation_bounds_pick_the_blocks_and_inodes_a_full_scan_does(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """The allocator's per-group search bounds (every bit before them is set) change no
    choice: files written, deleted (their blocks freed at the commit) and written again get
    the same inode numbers and blocks as with searches from each group's start."""
    import random

    from kernel.fs.ext4 import alloc

    base = mkfs(tmp_path / "base.img", "ext4-1k")
    rng = random.Random(11)
    first = [(f"a{i}", rng.randrange(0, 40000)) for i in range(300)]
    gone = rng.sample([n for n, _s in first], 100)
    # half in the root (its group has the freed blocks and inodes), half in new directories
    second = [(f"d{i % 7}/b{i}" if i % 2 else f"b{i}", rng.randrange(0, 60000))
              for i in range(200)]

    def play(img: Path) -> dict[str, tuple[int, str]]:
        inos = {}
        with Kernel(mb=32) as k:
            root = mount_rw(k, img)
            s = k.sys
            for name, size in first:
                write_file(s, f"{root}/{name}", rng.randbytes(size))
            for name in gone:
                s.unlink(f"{root}/{name}")
            s.sync()
            for d in range(7):
                s.mkdir(f"{root}/d{d}", 0o755)
            for name, size in second:
                write_file(s, f"{root}/{name}", rng.randbytes(size))
            for name, _size in first + second:
                if name not in gone:
                    inos[name] = s.stat(f"{root}/{name}").st_ino
        fsck(img)
        return {n: (ino, run("debugfs", "-R", f"blocks /{n}", img).stdout) for n, ino in inos.items()}

    bounded = tmp_path / "bounded.img"
    scanned = tmp_path / "scanned.img"
    bounded.write_bytes(base.read_bytes())
    scanned.write_bytes(base.read_bytes())
    state = rng.getstate()
    with_bounds = play(bounded)
    real_init = alloc.Allocator.__init__

    def init_without_bounds(self, sb):  # type: ignore[no-untyped-def]
        real_init(self, sb)
        self.bfree_lo, self.ifree_lo = Forgetful(), Forgetful()

    monkeypatch.setattr(alloc.Allocator, "__init__", init_without_bounds)
    rng.setstate(state)
    assert play(scanned) == with_bounds


ON_DISK = ("mode", "nlink", "uid", "gid", "rdev", "size", "blocks", "atime_ns", "mtime_ns",
           "ctime_ns", "btime_ns", "generation", "i_flags", "i_block", "file_acl", "extra_isize",
           "csum_seed")


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_a_new_inode_is_what_its_slot_decodes_to(tmp_path: Path, config: str) -> None:
    """New inodes are set up from the fields they are packed from, not decoded (one per
    file copied in): each kind, in a setgid directory of a group past 16 bits, is the same
    in memory as what decoding its slot gives: the slot as first packed for the fields
    nothing changed yet, and after a sync every field, checksum seed and times included."""
    from kernel.fs.ext4.inode import Ext4Inode

    img = mkfs(tmp_path / "n.img", config)
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        s.mkdir(f"{root}/d", 0o755)
        s.chown(f"{root}/d", 0, 70000)
        s.chmod(f"{root}/d", 0o2777)  # new entries take the directory's group
        make = {
            "reg": lambda p: s.close(s.open(p, kernel.O_CREAT | kernel.O_WRONLY, 0o640)),
            "dir": lambda p: s.mkdir(p, 0o750),
            "fast symlink": lambda p: s.symlink("target", p),
            "slow symlink": lambda p: s.symlink("t" * 300, p),
            "chr": lambda p: s.mknod(p, 0o20600, os.makedev(259, 70000)),
            "fifo": lambda p: s.mknod(p, 0o10644, 0),
        }
        made = {}
        for name, fn in make.items():
            fn(f"{root}/d/{name}")
            res, _ = s._resolve(kernel.AT_FDCWD, f"{root}/d/{name}", False)
            inode = res.dentry.inode
            assert type(inode) is Ext4Inode and inode.gid == 70000
            if name == "reg":  # untouched since: as first packed (times are set after)
                first = Ext4Inode(inode.sb, inode.ino, inode.raw)
                for field in ON_DISK:
                    if not field.endswith("time_ns"):
                        assert getattr(first, field) == getattr(inode, field), field
            made[name] = inode
        s.sync()
        for name, inode in made.items():
            stored = Ext4Inode(inode.sb, inode.ino, inode.raw)
            for field in ON_DISK:
                assert getattr(stored, field) == getattr(inode, field), (name, field)
    fsck(img)


def test_orlov_spreads_top_directories_and_keeps_the_rest_near_their_parent(
        tmp_path: Path) -> None:
    """On a sparse 64 GiB image (512 groups in flex groups of 16): directories made in the
    root go to distinct flex groups, as Linux's Orlov allocator spreads them; a directory
    made deeper down, and every file, stays in its parent's flex group, so a copied tree
    touches a few groups' bitmaps, not one group per directory. e2fsck -fn is clean."""
    need_tool("mke2fs")
    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        f.truncate(64 << 30)
    run("mke2fs", "-q", "-F", "-t", "ext4", img)
    head = run("dumpe2fs", "-h", img).stdout
    ipg = int(re.search(r"Inodes per group:\s+(\d+)", head).group(1))  # type: ignore[union-attr]
    flex = int(re.search(r"Flex block group size:\s+(\d+)", head).group(1))  # type: ignore[union-attr]
    assert flex > 1
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        top = {}
        for t in range(6):
            s.mkdir(f"{root}/top{t}", 0o755)
            top[t] = s.stat(f"{root}/top{t}").st_ino
            for d in range(12):
                s.mkdir(f"{root}/top{t}/sub{d}", 0o755)
                write_file(s, f"{root}/top{t}/sub{d}/f", b"x" * 5000)
        flex_of = {t: (ino - 1) // ipg // flex for t, ino in top.items()}
        assert len(set(flex_of.values())) == len(top), flex_of
        for t in top:
            for d in range(12):
                for path in (f"{root}/top{t}/sub{d}", f"{root}/top{t}/sub{d}/f"):
                    ino = s.stat(path).st_ino
                    assert (ino - 1) // ipg // flex == flex_of[t], (path, ino)
        for d in range(0, 12, 3):  # frees too: inodes, directories and blocks
            s.unlink(f"{root}/top1/sub{d}/f")
            s.rmdir(f"{root}/top1/sub{d}")
        s.sync()
        # the per-flex-group counts Orlov reads are the sums of their groups' counts
        res, _ = s._resolve(kernel.AT_FDCWD, root, True)
        alloc = res.mnt.sb.alloc
        for name, field in (("flex_inodes", "free_inodes"), ("flex_clusters", "free_blocks"),
                            ("flex_dirs", "used_dirs")):
            sums = [0] * len(getattr(alloc, name))
            for g, grp in enumerate(alloc.groups):
                sums[g // flex] += getattr(grp, field)
            assert getattr(alloc, name) == sums, name
    fsck(img)


def test_shared_xattr_block_copied_on_write(tmp_path: Path) -> None:
    """Linux shares identical xattr blocks between inodes; changing one copies it and the
    other keeps its value, with the reference counts e2fsck checks."""
    need_root()
    img = mkfs(tmp_path / "s.img", "ext4-1k")
    with LoopMount(img, tmp_path / "mnt", options="rw") as mnt:
        for n in ("a", "b", "c"):
            (mnt / n).write_bytes(b"")
            os.setxattr(mnt / n, b"user.shared", b"S" * 300)
    ino_blocks = {run("debugfs", "-R", f"stat /{n}", img).stdout.split("File ACL: ")[1].split()[0]
                  for n in "abc"}
    assert len(ino_blocks) == 1  # one block, shared
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        k.sys.setxattr(f"{root}/a", b"user.shared", b"changed", 0)
        k.sys.removexattr(f"{root}/b", b"user.shared")
        assert k.sys.getxattr(f"{root}/c", b"user.shared") == b"S" * 300
    fsck(img)
    with LoopMount(img, tmp_path / "mnt") as mnt:
        assert os.getxattr(mnt / "a", b"user.shared") == b"changed"
        assert b"user.shared" not in os.listxattr(mnt / "b")
        assert os.getxattr(mnt / "c", b"user.shared") == b"S" * 300


def test_acl_stored_in_ext4_form(tmp_path: Path) -> None:
    """POSIX ACLs written through the VFS form are stored compactly and Linux reads them."""
    need_root()
    need_tool("getfacl")
    img = mkfs(tmp_path / "a.img", "ext4")
    from kernel.vfs.cred import acl_to_xattr

    acl = acl_to_xattr([(kernel.uapi.ACL_USER_OBJ, 7, 0xFFFFFFFF), (kernel.uapi.ACL_USER, 5, 1000),
                        (kernel.uapi.ACL_GROUP_OBJ, 5, 0xFFFFFFFF), (kernel.uapi.ACL_MASK, 5, 0xFFFFFFFF),
                        (kernel.uapi.ACL_OTHER, 0, 0xFFFFFFFF)])
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        write_file(k.sys, f"{root}/f", b"x")
        k.sys.setxattr(f"{root}/f", b"system.posix_acl_access", acl, 0)
    fsck(img)
    with LoopMount(img, tmp_path / "mnt") as mnt:
        out = run("getfacl", "-n", mnt / "f").stdout
    assert "user:1000:r-x" in out and "mask::r-x" in out


def test_fill_to_enospc_delete_half_fill_again(tmp_path: Path) -> None:
    """A full image stays consistent: ENOSPC, deletions, ENOSPC again; e2fsck clean and
    every file that was written whole has its content. What the deletions free is used
    before they commit."""
    img = mkfs(tmp_path / "full.img", "ext4-1k", ["-N", "2048"])
    kept: dict[str, bytes] = {}
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys

        def fill(tag: str) -> None:
            i = 0
            while True:
                size = 300_000 if i % 10 == 0 else 700 + i * 37 % 5000
                body = hashlib.sha256(f"{tag}{i}".encode()).digest() * (size // 32)
                path = f"{root}/{tag}{i:05d}"
                try:
                    write_file(s, path, body)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    try:
                        s.unlink(path)
                    except OSError as e2:
                        assert e2.errno == errno.ENOENT
                    return
                kept[path] = body
                i += 1

        fill("a")
        assert len(kept) > 20
        freed = 0
        for path in sorted(kept)[::2]:
            s.unlink(path)
            freed += len(kept.pop(path))
        # the space of the deletions is had at once (the call that finds none commits
        # them and tries again), by a directory as by data
        s.mkdir(f"{root}/d")
        before = sum(map(len, kept.values()))
        fill("b")
        assert sum(map(len, kept.values())) - before > freed * 0.8
        for path, body in kept.items():
            assert read_file(s, path) == body
    fsck(img)


def test_read_write_mount_replays_the_journal_to_disk(tmp_path: Path) -> None:
    """A read-write mount of an image needing recovery replays the journal onto the image:
    afterwards it needs no recovery and e2fsck finds it clean."""
    img = unpack("dirty", tmp_path)
    assert "needs_recovery" in run("dumpe2fs", "-h", img).stdout
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        assert k.sys.statfs(root).f_bfree > 0
    assert "needs_recovery" not in run("dumpe2fs", "-h", img).stdout
    fsck(img)


@pytest.mark.parametrize("name", ["ext2", "ext3", "basic"])
def test_write_into_committed_images(tmp_path: Path, name: str) -> None:
    """Images made by mkfs -d from the test trees take new files and deletions."""
    img = unpack(name, tmp_path)
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        s.mkdir(f"{root}/new", 0o755)
        for i in range(50):
            write_file(s, f"{root}/new/{i}", os.urandom(i * 1000))
        for e in listdir(s, root):
            if e not in (b"new", b"lost+found"):
                p = f"{root}/{os.fsdecode(e)}"
                if s.lstat(p).st_mode & 0o170000 != 0o040000:
                    s.unlink(p)
    fsck(img)


def test_read_only_device_mounts_read_only(tmp_path: Path) -> None:
    """A read-only disk is mounted read-only (as mount does for a write-protected device):
    every write is EROFS and the image does not change."""
    img = mkfs(tmp_path / "r.img", "ext4")
    before = hashlib.sha256(img.read_bytes()).hexdigest()
    with Kernel(mb=32) as k:
        root = k.mount_dev(k.disk_add(img, readonly=True))
        with pytest.raises(OSError) as e:
            k.sys.mkdir(f"{root}/d", 0o755)
        assert e.value.errno == errno.EROFS
    assert hashlib.sha256(img.read_bytes()).hexdigest() == before


def test_inline_data_moves_to_blocks_when_changed(tmp_path: Path) -> None:
    """On an inline_data filesystem, inline files that are written, truncated or given
    attributes, and inline directories that gain or lose entries, move into blocks as ext4
    does when inline data outgrows the inode; untouched inline inodes stay readable."""
    need_root()
    img = unpack("inline", tmp_path)
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        before = {n: read_file(s, f"{root}/{n}") for n in ("inline-59", "inline-150", "inline-1")}
        fd = s.open(f"{root}/inline-59", kernel.O_WRONLY | kernel.O_APPEND)
        s.write(fd, b"+" * 5000)
        s.close(fd)
        s.truncate(f"{root}/inline-150", 20)
        s.setxattr(f"{root}/inline-1", b"user.x", b"y" * 100, 0)
        write_file(s, f"{root}/tiny-dir/new", b"new")
        s.unlink(f"{root}/tiny-dir/x")
        s.unlink(f"{root}/kernel-dir/k2")
        for i in range(40):
            write_file(s, f"{root}/kernel-dir/more-{i:02d}", b"m")
        assert read_file(s, f"{root}/inline-59") == before["inline-59"] + b"+" * 5000
        assert read_file(s, f"{root}/inline-150") == before["inline-150"][:20]
    fsck(img)
    with LoopMount(img, tmp_path / "mnt") as mnt:
        assert (mnt / "inline-59").read_bytes() == before["inline-59"] + b"+" * 5000
        assert (mnt / "inline-150").read_bytes() == before["inline-150"][:20]
        assert (mnt / "inline-1").read_bytes() == before["inline-1"]
        assert os.getxattr(mnt / "inline-1", b"user.x") == b"y" * 100
        assert sorted(os.listdir(mnt / "tiny-dir")) == ["new"]
        assert sorted(os.listdir(mnt / "kernel-dir")) == sorted(
            ["k0", "k1", "k3", "k4"] + [f"more-{i:02d}" for i in range(40)])
        assert (mnt / "inline-300").stat().st_size == 300


def test_writes_past_the_end_of_the_map(tmp_path: Path) -> None:
    """Writes at a block boundary past everything mapped (a new file, an append) take new
    blocks whole: the rest of a last block is zeros, the gap before them stays a hole, and
    on a full image the write is short, at a block boundary, with what fit readable."""
    img = mkfs(tmp_path / "e.img", "ext4-1k")
    with Kernel(mb=16) as k:
        root = mount_rw(k, img)
        s = k.sys
        fd = s.open(f"{root}/f", kernel.O_CREAT | kernel.O_RDWR, 0o644)
        head, tail = os.urandom(1000), os.urandom(700)
        assert s.pwrite(fd, head, 0) == 1000
        s.ftruncate(fd, 3000)
        assert s.pwrite(fd, tail, 5120) == 700
        assert s.pread(fd, 8192, 0) == head + bytes(5120 - 1000) + tail
        st = s.fstat(fd)
        assert (st.st_size, st.st_blocks) == (5820, 4)  # two 1 KiB blocks: 0 and 5
        s.close(fd)
        # fill the image with one write: short, whole blocks, the data that fit intact
        free = s.statfs(root).f_bfree * 1024  # root may use the reserved blocks too
        big = os.urandom(free + (1 << 20))
        fd = s.open(f"{root}/big", kernel.O_CREAT | kernel.O_RDWR, 0o644)
        n = s.pwrite(fd, big, 0)
        assert 0 < n < len(big) and n % 1024 == 0
        with pytest.raises(OSError) as e:
            s.pwrite(fd, big[n:], n)
        assert e.value.errno == errno.ENOSPC
        assert s.fstat(fd).st_size == n
        assert read_file(s, f"{root}/big") == big[:n]
        s.close(fd)
    fsck(img)


def test_out_of_inodes_is_enospc(tmp_path: Path) -> None:
    """With every inode used, creating anything is ENOSPC and the image stays clean."""
    img = mkfs(tmp_path / "i.img", "ext4-1k", ["-N", "64"])
    made = 0
    with Kernel(mb=16) as k:
        root = mount_rw(k, img)
        s = k.sys
        with pytest.raises(OSError) as e:
            while True:
                if made % 5 == 0:
                    s.mkdir(f"{root}/d{made}", 0o755)
                else:
                    write_file(s, f"{root}/f{made}", b"x")
                made += 1
        assert e.value.errno == errno.ENOSPC
        assert s.statfs(root).f_ffree == 0
        with pytest.raises(OSError) as e:
            s.symlink(b"t", f"{root}/link")
        assert e.value.errno == errno.ENOSPC
        s.unlink(f"{root}/f1")
        write_file(s, f"{root}/again", b"y")
    assert made > 40
    fsck(img)


LAYOUT_SWEEP = {
    "2k": ["-t", "ext4", "-b", "2048"],
    "64k": ["-t", "ext4", "-b", "65536"],
    "meta_bg": ["-t", "ext4", "-O", "meta_bg,^resize_inode"],
    "no-flex_bg": ["-t", "ext4", "-O", "^flex_bg"],
    "sparse_super2": ["-t", "ext4", "-O", "sparse_super2"],
    "no-dir_index": ["-t", "ext4", "-O", "^dir_index"],
    "no-extents": ["-t", "ext4", "-O", "^extent,^64bit"],
    "inline_data": ["-t", "ext4", "-O", "inline_data"],
    "orphan_file": ["-t", "ext4", "-O", "orphan_file"],
    "128-byte inodes": ["-t", "ext4", "-I", "128"],
    "ext2 4k": ["-t", "ext2", "-b", "4096"],
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_SWEEP))
def test_other_layouts(tmp_path: Path, layout: str) -> None:
    """The same tree of operations on the layouts mkfs can also make: e2fsck clean and read
    back equal."""
    need_tool("mke2fs")
    img = tmp_path / "l.img"
    with open(img, "wb") as f:
        f.truncate(96 << 20)
    run("mke2fs", "-q", "-F", *LAYOUT_SWEEP[layout], img)
    _populate_and_check(img, tmp_path)


def _cookies(s, path: str, count: int = 32768) -> list[tuple[bytes, int]]:
    fd = s.open(path, kernel.O_RDONLY | kernel.O_DIRECTORY)
    out = []
    try:
        while batch := s.getdents64(fd, count):
            out.extend((d.d_name, d.d_off) for d in batch)
            assert len(out) < 100_000, "readdir does not end (a cookie leads back)"
    finally:
        s.close(fd)
    return out


def test_readdir_cookies_of_new_entries_match_a_fresh_mount(tmp_path: Path) -> None:
    """Entries added to a one-block hashed directory get their hash cookie only when readdir
    asks: the order, the cookies and resuming at a cookie are what a fresh mount reads."""
    img = mkfs(tmp_path / "c.img", "ext4")
    with Kernel(mb=16) as k:
        root = mount_rw(k, img)
        s = k.sys
        s.mkdir(f"{root}/d", 0o755)
        s.close(s.open(f"{root}/d/first", kernel.O_CREAT | kernel.O_WRONLY, 0o644))
        assert [n for n, _ in _cookies(s, f"{root}/d")][2:] == [b"first"]  # cache built
        for i in range(60):
            s.close(s.open(f"{root}/d/f{i:02d}", kernel.O_CREAT | kernel.O_WRONLY, 0o644))
            if i == 30:
                s.unlink(f"{root}/d/f10")  # a change while cookies wait
                s.rename(f"{root}/d/f11", f"{root}/d/renamed")
        live = _cookies(s, f"{root}/d", 600)  # several calls, each resuming at a cookie
        offs = [o for _n, o in live]
        assert offs == sorted(offs) and len(set(offs)) == len(offs)
        # seekdir to a cookie in the middle: the rest follows
        fd = s.open(f"{root}/d", kernel.O_RDONLY | kernel.O_DIRECTORY)
        s.lseek(fd, live[20][1], kernel.SEEK_SET)
        rest = [(d.d_name, d.d_off) for d in s.getdents64(fd, 1 << 16)]
        s.close(fd)
        assert rest == live[21:]
    fsck(img)
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(img, readonly=True))
        fresh = _cookies(k.sys, f"{root}/d")
    assert fresh == live
    names = {n for n, _ in live}
    assert b"f10" not in names and b"f11" not in names and b"renamed" in names
    assert len(names) == 2 + 1 + 60 - 1


@pytest.mark.parametrize("extra", [[], ["-O", "^dir_index"]], ids=["htree", "linear"])
def test_readdir_of_a_directory_being_filled_matches_a_fresh_mount(tmp_path: Path,
                                                                   extra: list[str]) -> None:
    """Entries added in bulk wait outside the readdir order and are merged when it is
    wanted: listings between batches of creates, unlinks and renames give the order and
    cookies a fresh mount reads."""
    img = mkfs(tmp_path / "c.img", "ext4", extra)
    with Kernel(mb=16) as k:
        root = mount_rw(k, img)
        s = k.sys
        s.mkdir(f"{root}/d", 0o755)
        d = f"{root}/d"
        assert [n for n, _ in _cookies(s, d)] == [b".", b".."]  # the cache exists
        for i in range(400):
            s.close(s.open(f"{d}/a{i:03d}-" + "x" * (i % 40), kernel.O_CREAT | kernel.O_WRONLY))
        first = _cookies(s, d)
        assert len(first) == 402
        for i in range(300):
            s.close(s.open(f"{d}/b{i:03d}", kernel.O_CREAT | kernel.O_WRONLY))
            if i % 6 == 0:
                s.unlink(f"{d}/a{i:03d}-" + "x" * (i % 40))
        s.rename(f"{d}/b007", f"{d}/renamed")
        live = _cookies(s, d, 600)
        offs = [o for _n, o in live]
        assert offs == sorted(offs) and len(set(offs)) == len(offs)
    fsck(img)
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(img, readonly=True))
        assert _cookies(k.sys, f"{root}/d") == live
    assert len(live) == 402 + 300 - 50


@pytest.mark.parametrize("fstype", ["ext4", "ext3", "ext2"])
def test_a_full_image_can_store_the_maps_of_what_it_holds(tmp_path: Path, fstype: str) -> None:
    """Files written into a free space of single blocks each need a block of extents or
    pointers, which is allocated when the map is stored (at the commit or unmount): data
    never takes the blocks those stores will need, so filling such an image ends in
    ENOSPC for the writer, not at the commit; every file reads back whole, e2fsck clean."""
    need_tool("mke2fs")
    img = tmp_path / "frag.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    run("mke2fs", "-q", "-F", "-t", fstype, "-b", "1024", "-N", "8192", img)
    kept: dict[str, bytes] = {}
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        n = 0
        with pytest.raises(OSError) as e:
            while True:
                write_file(s, f"{root}/s{n}", b"s" * 1024)
                n += 1
        assert e.value.errno == errno.ENOSPC
        s.sync()
        for i in range(0, n, 2):  # every other block free
            s.unlink(f"{root}/s{i}")
        s.sync()
        for i in itertools.count():
            path = f"{root}/f{i}"
            body = hashlib.sha256(path.encode()).digest() * 640  # 20 blocks, 20 extents
            try:
                write_file(s, path, body)
            except OSError as e2:
                assert e2.errno == errno.ENOSPC
                break
            kept[path] = body
        assert len(kept) > 100
        before = s.statfs(root).f_bfree
        s.sync()
        assert s.statfs(root).f_bfree == before  # what the stores took counted as used
        res, _ = s._resolve(kernel.AT_FDCWD, root, True)
        assert res.mnt.sb.alloc.owed == 0  # every map stored, nothing held back any more
    fsck(img)
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        for path, body in kept.items():
            assert read_file(k.sys, path) == body


@pytest.mark.python_modules
def test_an_inode_that_fails_to_store_stays_dirty(tmp_path: Path, monkeypatch) -> None:
    """A store that fails in the middle of a batch (an I/O error, say) loses none of the
    inodes after it: the next sync stores them all, the files read back, e2fsck clean."""
    from kernel.fs.ext4 import super as ext4_super

    img = mkfs(tmp_path / "s.img", "ext4")
    bodies = {f"f{i}": hashlib.sha256(b"%d" % i).digest() * (100 + i) for i in range(20)}
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        s = k.sys
        for name, body in bodies.items():
            write_file(s, f"{root}/{name}", body)
        real = ext4_super.w.store_inode
        calls = 0

        def failing(inode) -> None:
            nonlocal calls
            calls += 1
            if calls == 5:
                raise kernel.KernelError(errno.EIO, "injected")
            real(inode)

        monkeypatch.setattr(ext4_super.w, "store_inode", failing)
        with pytest.raises(OSError):
            s.sync()
        assert calls == 5
        monkeypatch.setattr(ext4_super.w, "store_inode", real)
        s.sync()
    fsck(img)
    with Kernel(mb=32) as k:
        root = mount_rw(k, img)
        for name, body in bodies.items():
            assert read_file(k.sys, f"{root}/{name}") == body


@pytest.mark.parametrize("blocksize", [1024, 4096])
def test_written_data_is_the_callers_at_the_time_of_the_call(tmp_path: Path,
                                                             blocksize: int) -> None:
    """New files' data waits in a queue to be written in batches; bytes go out as they
    are (they cannot change), a bytearray or a memoryview of one is copied at the call:
    the caller changing its buffer afterwards changes nothing on disk. Sizes with and
    without a partial last block, on two block sizes."""
    img = mkfs(tmp_path / "fs.img", "ext4" if blocksize == 4096 else "ext4-1k")
    sizes = [1, 1000, blocksize, 3 * blocksize + 17, 64 * blocksize, 300_001]
    want = {}
    k = Kernel(mb=32)
    try:
        mnt = mount_rw(k, img)
        s = k.sys
        for n, kind in itertools.product(sizes, ("bytes", "bytearray", "view")):
            data = os.urandom(n)
            want[f"{kind}-{n}"] = data
            fd = s.open(f"{mnt}/{kind}-{n}", kernel.O_WRONLY | kernel.O_CREAT, 0o644)
            if kind == "bytes":
                assert s.pwrite64(fd, memoryview(data), 0) == n
            else:
                buf = bytearray(data)
                assert s.pwrite64(fd, buf if kind == "bytearray" else memoryview(buf), 0) == n
                buf[:] = bytes(n)  # the caller reuses its buffer
            s.close(fd)
        k.umount(mnt)
    finally:
        k.halt()
    fsck(img)
    k = Kernel(mb=32)
    try:
        mnt = k.mount_dev(k.disk_add(img, readonly=True))
        for name, data in want.items():
            assert read_file(k.sys, f"{mnt}/{name}") == data, name
    finally:
        k.halt()


def test_rewrites_of_queued_data_wait_for_the_queue(tmp_path: Path) -> None:
    """Data written again while its first write still waits in the queue (a new file's
    blocks, then writes into them, whole blocks and parts): the queue goes out
    first, since one batch's writes may land in any order (and the block layer refuses
    overlapping ones in a batch). The last write wins on disk."""
    img = mkfs(tmp_path / "fs.img", "ext4")
    want = bytearray()

    def put(s: Any, fd: int, data: bytes, at: int) -> None:
        assert s.pwrite64(fd, data, at) == len(data)
        want[len(want):] = bytes(max(0, at + len(data) - len(want)))
        want[at:at + len(data)] = data

    with Kernel(mb=32) as k:
        mnt = mount_rw(k, img)
        s = k.sys
        fd = s.open(f"{mnt}/f", kernel.O_CREAT | kernel.O_RDWR, 0o644)
        put(s, fd, b"a" * 10000, 0)      # new blocks 0-2, queued
        put(s, fd, b"g" * 4096, 4096)    # all of queued block 1 (nothing to read first)
        put(s, fd, b"b" * 100, 5000)     # into it again
        put(s, fd, b"h" * 4096, 4096)    # and all of it once more
        put(s, fd, b"c" * 8192, 12288)   # new blocks 3-4
        put(s, fd, b"d" * 10, 12290)     # into queued block 3
        put(s, fd, b"e" * 10, 100)       # into block 0, twice
        put(s, fd, b"f" * 10, 105)
        s.close(fd)
        k.umount(mnt)
    fsck(img)
    with Kernel(mb=32) as k:
        mnt = k.mount_dev(k.disk_add(img, readonly=True))
        assert read_file(k.sys, f"{mnt}/f") == bytes(want)
