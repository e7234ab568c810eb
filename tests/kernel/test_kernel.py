"""The kernel façade: boot, attach, detect, mount, refuse writes on read-only disks, halt."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from helpers import IMAGES, need_tool, run, sha256_file, unpack_image

import kernel
from kernel import Kernel

DETECT = [("ext4-basic.img", "ext4"), ("ext4-ext2.img", "ext2"), ("ext4-ext3.img", "ext3"),
          ("xfs-v5.img", "xfs"), ("btrfs-basic.img", "btrfs")]


def test_boot_has_a_ramfs_root_with_dev_and_mnt() -> None:
    with Kernel(mb=8) as k:
        names = sorted(d.d_name for d in k.sys.getdents64(k.sys.open("/", kernel.O_DIRECTORY)))
        assert names == [b".", b"..", b"dev", b"mnt"]
        assert k.sys.statfs("/").f_type == 0x858458F6  # RAMFS_MAGIC
    assert k.halted


@pytest.mark.parametrize("name,fstype", [d for d in DETECT if (IMAGES / (d[0] + ".zst")).exists()])
def test_type_is_detected_from_the_superblock(tmp_path: Path, name: str, fstype: str) -> None:
    image = unpack_image(name, tmp_path)
    with Kernel(mb=16) as k:
        disk = k.disk_add(image, readonly=True)
        root = k.mount_dev(disk)
        assert root == "/mnt/vda"
        driver = k.fstype_of(root)
        assert driver == fstype or (fstype in ("ext2", "ext3") and driver in ("ext2", "ext3", "ext4"))
        assert k.sys.stat(root).st_mode & 0o170000 == 0o040000


def test_probe_fields_are_the_on_disk_ones() -> None:
    """Each driver's probe reads the superblock with a struct of its own (so that detection
    imports no driver): its fields sit where the format modules say."""
    import re
    import struct

    from kernel.fs import btrfs, ext4, xfs
    from kernel.fs.btrfs import ondisk as bod
    from kernel.fs.ext4 import ondisk as eod
    from kernel.fs.xfs import ondisk as xod

    def offsets(st: struct.Struct) -> list[int]:
        out, pos = [], 0
        for count, code in re.findall(r"(\d*)([a-zA-Z])", st.format[1:]):
            n = int(count or 1)
            if code == "x":
                pos += n
                continue
            out.append(pos)
            pos += struct.calcsize(st.format[0] + code) * n
        return out

    names = ["s_inodes_count", "s_log_block_size", "s_blocks_per_group", "s_inodes_per_group",
             "s_magic", "s_rev_level", "s_feature_incompat"]
    assert offsets(ext4._PROBE) == [eod.ext4_super_block.offset_of(n) for n in names]
    assert (ext4.SUPERBLOCK_OFFSET, ext4.SUPERBLOCK_SIZE) == (eod.SUPERBLOCK_OFFSET,
                                                              eod.SUPERBLOCK_SIZE)
    assert (ext4._MAGIC, ext4._INCOMPAT_JOURNAL_DEV) == (eod.EXT4_SUPER_MAGIC,
                                                         eod.INCOMPAT_JOURNAL_DEV)
    names = ["sb_magicnum", "sb_blocksize", "sb_agblocks", "sb_agcount", "sb_versionnum"]
    assert offsets(xfs._PROBE) == [xod.xfs_dsb.offset_of(n) for n in names]
    assert xfs._MAGIC == xod.XFS_SB_MAGIC
    assert (btrfs._SUPER_OFFSET, btrfs._SUPER_INFO_SIZE, btrfs._MAGIC) == (
        bod.SUPER_OFFSETS[0], bod.SUPER_INFO_SIZE, bod.BTRFS_MAGIC)


def test_only_the_mounted_driver_is_loaded(tmp_path: Path) -> None:
    """Detection probes every driver, but only the one that mounts is imported whole (a
    tool's start-up pays for one filesystem); the checksum library loads without its
    package metadata."""
    import subprocess
    import sys

    image = unpack_image("btrfs-basic.img", tmp_path)
    code = (
        "import sys, kernel\n"
        "with kernel.Kernel(mb=16) as k:\n"
        f"    root = k.mount_dev(k.disk_add({str(image)!r}, readonly=True))\n"
        "    assert k.sys.stat(root + '/.').st_ino == 256\n"
        "    print(sorted(m for m in sys.modules if m.endswith('.super') and 'kernel.fs' in m))\n"
        "    print('importlib.metadata' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "['kernel.fs.btrfs.super']"
    assert out[1] == "False"


def test_read_only_disk_gives_erofs_at_the_syscall_and_never_changes(tmp_path: Path) -> None:
    image = unpack_image("ext4-basic.img", tmp_path)
    before = sha256_file(image)
    with Kernel(mb=16) as k:
        disk = k.disk_add(image, readonly=True)
        root = k.mount_dev(disk)
        for call in (lambda: k.sys.open(root + "/new", kernel.O_CREAT | kernel.O_WRONLY, 0o644),
                     lambda: k.sys.open(root + "/small.txt", kernel.O_WRONLY),
                     lambda: k.sys.mkdir(root + "/d", 0o755),
                     lambda: k.sys.unlink(root + "/small.txt"),
                     lambda: k.sys.setxattr(root + "/small.txt", "user.x", b"1"),
                     lambda: k.sys.chmod(root + "/small.txt", 0o600),
                     lambda: k.sys.utimensat(kernel.AT_FDCWD, root + "/small.txt", None)):
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == errno.EROFS
        # mounting the read-only device read-write is refused as Linux does
        k.sys.mkdir("/mnt/again", 0o755)
        with pytest.raises(OSError) as e:
            k.sys.mount("/dev/vda", "/mnt/again", "ext4", 0, None)
        assert e.value.errno in (errno.EACCES, errno.EBUSY, errno.EROFS)
        k.sys.sync()
    assert sha256_file(image) == before


def test_unknown_filesystem_and_bad_type(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\x11" * (4 << 20))
    with Kernel(mb=8) as k:
        disk = k.disk_add(junk, readonly=True)
        with pytest.raises(OSError) as e:
            k.mount_dev(disk)
        assert e.value.errno == errno.EINVAL and "junk.img" in str(e.value)
        with pytest.raises(OSError) as e:
            k.mount_dev(disk, fstype="ntfs")
        assert e.value.errno == errno.ENODEV


def test_partition_choice(tmp_path: Path) -> None:
    need_tool("sfdisk", "mkfs.ext4")
    disk_img = tmp_path / "d.img"
    with open(disk_img, "wb") as f:
        f.truncate(64 << 20)
    run("sfdisk", "-q", disk_img, input="label: dos\nstart=2048, size=40960\nstart=43008, size=40960\n")
    run("mkfs.ext4", "-q", "-F", "-E", f"offset={43008 * 512}", disk_img, "20M")
    with Kernel(mb=16) as k:
        disk = k.disk_add(disk_img, readonly=True)
        # only partition 2 holds a filesystem: it is chosen
        assert k.mount_dev(disk) == "/mnt/vda2"
        with pytest.raises(OSError) as e:
            k.mount_dev(disk, part=1)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            k.mount_dev(disk, part=9)
        assert e.value.errno == errno.ENXIO and "partition 1" in str(e.value)
    run("mkfs.ext4", "-q", "-F", "-E", f"offset={2048 * 512}", disk_img, "20M")
    with Kernel(mb=16) as k:
        disk = k.disk_add(disk_img, readonly=True)
        with pytest.raises(OSError) as e:
            k.mount_dev(disk)
        assert "several partitions" in str(e.value)
        assert k.mount_dev(disk, part=1) == "/mnt/vda1"
        assert k.mount_dev(disk, part=2) == "/mnt/vda2"


def test_umount_busy_and_halt_releases_everything(tmp_path: Path) -> None:
    image = unpack_image("ext4-ext3.img", tmp_path)
    k = Kernel(mb=16)
    disk = k.disk_add(image, readonly=True)
    root = k.mount_dev(disk)
    fd = k.sys.open(root, kernel.O_RDONLY | kernel.O_DIRECTORY)
    with pytest.raises(OSError) as e:
        k.umount(root)
    assert e.value.errno == errno.EBUSY
    k.sys.close(fd)
    k.umount(root)
    with pytest.raises(OSError) as e:
        k.umount(root)  # now just a directory of the root filesystem
    assert e.value.errno == errno.EINVAL
    root = k.mount_dev(disk)
    k.sys.open(root, kernel.O_RDONLY)  # left open on purpose: halt closes it
    k.halt()
    assert k.halted
    assert disk.device.backend.fd == -1


def test_a_forked_child_goes_on_with_its_own_copy(tmp_path: Path) -> None:
    """fork() after mounting: the child reads with its own copy of the kernel (guest memory,
    caches, descriptors), its I/O threads start afresh, and the parent is unaffected."""
    import hashlib
    import os

    need_tool("mkfs.ext4")
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(9 << 20)  # read in one batch of several requests: the I/O threads serve it
    (src / "big").write_bytes(big)
    (src / "small").write_bytes(b"small file\n")
    image = tmp_path / "f.img"
    run("mkfs.ext4", "-q", "-F", "-d", src, image, "32M")
    want = hashlib.sha256(big).hexdigest()
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True))
        s = k.sys
        fd = s.open(root + "/big")
        assert hashlib.sha256(s.pread64(fd, len(big), 0)).hexdigest() == want  # threads started
        disk = k.disks[0]
        assert disk.device._workers, "the big read did not go to the I/O threads"
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: only os._exit leaves it
            code = 1
            try:
                os.close(r)
                s.lseek(fd, 0, kernel.SEEK_SET)
                got = hashlib.sha256(s.read(fd, len(big))).hexdigest()  # the inherited descriptor
                s.close(fd)
                fd2 = s.open(root + "/small")
                small = s.read(fd2, 100)
                os.write(w, f"{got}|{small!r}|{len(disk.device._workers)}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        import select
        ready, _, _ = select.select([r], [], [], 60)
        if not ready:
            os.kill(pid, 9)
        with os.fdopen(r, "rb") as f:
            reply = f.read().decode() if ready else "the child hung"
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, reply
        got, small, threads = reply.split("|")
        assert got == want and small == repr(b"small file\n")
        assert int(threads) >= 1  # the child started its own
        # the parent's kernel is untouched: its descriptor is still open, its reads still right
        assert s.fstat(fd).st_size == len(big)
        assert hashlib.sha256(s.pread64(fd, len(big), 0)).hexdigest() == want


def test_an_attached_image_is_locked_against_other_writers(tmp_path: Path) -> None:
    """Shared lock to read, exclusive to write, as QEMU locks its images: a writer beside
    anyone else gets EBUSY; readers share; a halt lets go; ``lock_wait`` waits for it."""
    import fcntl
    import threading

    image = unpack_image("ext4-basic.img", tmp_path)
    before = sha256_file(image)
    with Kernel(mb=8) as a, Kernel(mb=8) as b:
        a.disk_add(image, readonly=True)
        b.disk_add(image, readonly=True)  # readers share
        with Kernel(mb=8) as c:
            with pytest.raises(OSError) as ei:
                c.disk_add(image)
            assert ei.value.errno == errno.EBUSY and str(image) in str(ei.value)
    assert sha256_file(image) == before
    with Kernel(mb=8) as a:
        a.mount_dev(a.disk_add(image))
        with Kernel(mb=8) as c:
            for readonly in (True, False):
                with pytest.raises(OSError) as ei:
                    c.disk_add(image, readonly=readonly, lock_wait=0.2)
                assert ei.value.errno == errno.EBUSY
    # the writer halted: the image is free again, and a holder that lets go within
    # lock_wait is waited for
    with open(image, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        threading.Timer(0.5, lambda: fcntl.flock(held, fcntl.LOCK_UN)).start()
        with Kernel(mb=8) as c:
            with pytest.raises(OSError):
                c.disk_add(image)
            root = c.mount_dev(c.disk_add(image, lock_wait=10))
            assert c.sys.stat(root).st_ino == 2
