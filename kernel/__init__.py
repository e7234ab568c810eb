"""A library kernel: disk images as virtio-blk devices, real filesystem drivers,
and Linux's system call API, in one Python process.

The façade is small::

    from kernel import Kernel

    with Kernel(mb=64) as k:
        disk = k.disk_add("disk.img", readonly=True)
        root = k.mount_dev(disk)                     # type and partition detected
        fd = k.sys.open(root + "/etc/hostname")
        print(k.sys.read(fd, 4096))

Front ends use nothing but this module: ``Kernel``, its ``sys`` (the system
calls), the constants re-exported from ``kernel.uapi`` and the errors from
``kernel.errors``.

A kernel survives ``fork()``: the child goes on with a private copy of it as
of the fork (guest memory, caches, mounts, open files), and its I/O threads
start afresh. Fork only a kernel whose disks are read-only; two kernels
writing one image would corrupt it.

The hot modules run compiled (mypyc) when ``python -m kernel.nativebuild`` made a
build of the current sources; see ``kernel.native``.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import native

native.activate()  # before the modules it may load compiled are imported

from . import uapi
from .block.blkdev import (
    BLOCK_EXT_MAJOR,
    DISK_MINORS,
    VIRTBLK_MAJOR,
    BlockDevice,
)
from .block.buffer import BufferCache
from .block.partitions import Partition, PartitionTableError, scan
from .block.virtio.backend import RawFile
from .block.virtio.blk import VirtioBlk
from .block.virtio.device import VirtioBlkDevice
from .block.virtio.mmio import MmioTransport
from .errors import FsCorruptedError, KernelError, kerr
from .fs import register_all
from .mm import Arena
from .syscalls import Dirent, Syscalls
from .uapi import *  # noqa: F401,F403 - the constants are part of the façade
from .vfs.dcache import MountTable, Path
from .vfs.inode import StatFs, SuperBlock
from .vfs.stat import Stat
from .vfs.super import Registry, do_umount, kill_sb, new_mount
from .vfs.task import Task

__all__ = [
    "Kernel", "Disk", "Partition", "KernelError", "FsCorruptedError", "Stat", "StatFs", "Dirent",
    "Syscalls", "uapi", "kerr",
]

log = logging.getLogger("kernel")

DMA_MEMORY = 16 << 20


class _RingBuffer(logging.Handler):
    """The kernel log (dmesg): the last messages, whoever else listens."""

    def __init__(self, size: int = 1000) -> None:
        super().__init__(logging.DEBUG)
        self.records: collections.deque[str] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@dataclass
class Disk:
    """An attached image: a virtio-blk disk and the partitions found on it."""

    index: int
    name: str
    path: str
    readonly: bool
    device: VirtioBlkDevice
    gendisk: VirtioBlk
    bdev: BlockDevice
    table: str | None = None
    partitions: list[Partition] = field(default_factory=list)
    part_bdevs: dict[int, BlockDevice] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.bdev.size


class Kernel:
    """Boot a kernel; ``mb`` bounds the buffer cache (LKL's ``mb=``)."""

    def __init__(self, mb: int = 64, io_threads: int = 2) -> None:
        self.lock = threading.RLock()
        self.mb = mb
        self.io_threads = io_threads
        self.arena = Arena(DMA_MEMORY)
        self.bcache = BufferCache(mb << 20)
        self.registry = Registry()
        register_all(self.registry)
        self.mounts = MountTable()
        self.disks: list[Disk] = []
        self._bdevs: dict[int, BlockDevice] = {}
        self._anon = itertools.count(16)
        self._ext_minor = itertools.count(0)
        self.dmesg = _RingBuffer()
        self.dmesg.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logging.getLogger("kernel").addHandler(self.dmesg)
        if logging.getLogger("kernel").level == logging.NOTSET:
            logging.getLogger("kernel").setLevel(logging.INFO)
        self.halted = False
        _LIVE.add(self)

        rootfs = self.registry.get("ramfs")
        assert rootfs is not None
        sb = rootfs.mount(self, None, 0, "")
        self.root_mount = new_mount(sb, 0, "rootfs")
        root = Path(self.root_mount, self.root_mount.root)
        # Debian's defaults (systemd's protect-links.conf)
        self.sysctl: dict[str, int] = {"fs.protected_hardlinks": 1}
        self.init_task = Task(self.mounts, root, sysctl=self.sysctl)
        self.sys = Syscalls(self, self.init_task)
        self.sys.mkdir("/dev", 0o755)
        self.sys.mkdir("/mnt", 0o755)
        log.info("booted: %d MiB buffer cache, %d I/O threads", mb, io_threads)

    def _after_fork_in_child(self) -> None:
        self.lock.release()  # taken before the fork by the forking thread, which is us
        self.arena.after_fork_in_child()
        for disk in self.disks:
            disk.device.after_fork_in_child()
            disk.gendisk.after_fork_in_child()

    # -- context manager ---------------------------------------------------------
    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.halt()

    # -- services for the rest of the kernel ----------------------------------------
    @staticmethod
    def clock() -> int:
        return time.time_ns()

    def anon_dev(self) -> int:
        return uapi.makedev(0, next(self._anon))

    def bdev_by_dev(self, dev: int) -> BlockDevice | None:
        return self._bdevs.get(dev)

    def path_of(self, path: Path, root: Path | None = None) -> bytes:
        """The absolute name of ``path`` as seen from ``root`` (d_path)."""
        root = root or self.init_task.root
        parts: list[bytes] = []
        mnt, d = path
        while not (mnt is root.mnt and d is root.dentry):
            if d is mnt.root:
                if mnt.parent is None:
                    break
                assert mnt.mountpoint is not None
                d, mnt = mnt.mountpoint, mnt.parent
                continue
            parts.append(d.name)
            d = d.parent
        return b"/" + b"/".join(reversed(parts))

    def _writable_supers(self) -> Iterator[SuperBlock]:
        """Each read-write superblock once (mounts may share one)."""
        seen = set()
        for m in [self.root_mount, *self.mounts.all()]:
            if id(m.sb) not in seen and not m.sb.rdonly:
                seen.add(id(m.sb))
                yield m.sb

    def sync_all(self) -> None:
        for sb in self._writable_supers():
            sb.sync()

    def reclaim_space(self) -> bool:
        """A system call ran out of space: let every filesystem commit the blocks it
        freed (``SuperBlock.reclaim``); True if any did, and a retry may succeed."""
        return any([sb.reclaim() for sb in self._writable_supers()])

    # -- disks --------------------------------------------------------------------------
    def disk_add(self, path: str | os.PathLike[str], readonly: bool = False,
                 lock_wait: float = 0.0) -> Disk:
        """Attach an image file as the next virtio-blk disk (vda, vdb, ...).

        A read-only disk opens the file read-only and offers VIRTIO_BLK_F_RO:
        no write can reach it. The image is locked while attached (shared when
        read-only, exclusive when writable): EBUSY if another process, or another
        disk here, holds it against us for more than ``lock_wait`` seconds.
        """
        with self.lock:
            path = os.fspath(path)
            try:
                backend = RawFile(path, readonly=readonly, lock_wait=lock_wait)
            except OSError as e:
                raise kerr(e.errno or errno.EIO, path, e.strerror) from None
            index = len(self.disks)
            name = "vd" + _disk_letters(index)
            device = VirtioBlkDevice(self.arena.view, backend, io_threads=self.io_threads)
            gd = VirtioBlk(MmioTransport(device), self.arena, name, VIRTBLK_MAJOR,
                           index * DISK_MINORS)
            dev = uapi.makedev(VIRTBLK_MAJOR, index * DISK_MINORS)
            bdev = BlockDevice(gd, 0, name=name, dev=dev)
            disk = Disk(index, name, path, readonly, device, gd, bdev)
            self._bdevs[dev] = bdev
            self.disks.append(disk)
            self._mknod(name, dev)
            try:
                disk.table, disk.partitions = scan(bdev)
            except PartitionTableError as e:
                log.warning("%s: %s", name, e)
            for part in disk.partitions:
                if part.number < DISK_MINORS:
                    pdev = uapi.makedev(VIRTBLK_MAJOR, index * DISK_MINORS + part.number)
                else:
                    pdev = uapi.makedev(BLOCK_EXT_MAJOR, next(self._ext_minor))
                pb = BlockDevice(gd, part.number, part.start, part.size, dev=pdev)
                disk.part_bdevs[part.number] = pb
                self._bdevs[pdev] = pb
                self._mknod(pb.name, pdev)
            log.info("%s: %s, %d sectors%s%s", name, path, gd.capacity,
                     " (read-only)" if readonly else "",
                     f", {disk.table} partition table: {len(disk.partitions)} partitions"
                     if disk.table else "")
            return disk

    def _mknod(self, name: str, dev: int) -> None:
        self.sys.mknod("/dev/" + name, uapi.S_IFBLK | 0o600, dev)

    def detect(self, bdev: BlockDevice) -> str | None:
        """The name of the first registered filesystem whose magic matches."""
        for fs in self.registry.with_devices():
            try:
                if fs.probe(bdev):
                    return fs.name
            except OSError:
                continue
        return None

    def _choose(self, disk: Disk, part: int | None) -> BlockDevice:
        if part is not None and part != 0:
            bdev = disk.part_bdevs.get(part)
            if bdev is None:
                raise kerr(errno.ENXIO, disk.path, f"no partition {part}; "
                           + _describe_parts(disk))
            if any(p.number == part and p.extended for p in disk.partitions):
                raise kerr(errno.EINVAL, disk.path, f"partition {part} is an extended partition")
            return bdev
        if part == 0 or not disk.partitions:
            return disk.bdev
        usable = [p for p in disk.partitions if not p.extended
                  and self.detect(disk.part_bdevs[p.number]) is not None]
        if len(usable) == 1:
            return disk.part_bdevs[usable[0].number]
        if not usable:
            raise kerr(errno.EINVAL, disk.path, "no partition holds a filesystem this kernel "
                       "can mount; " + _describe_parts(disk))
        raise kerr(errno.EINVAL, disk.path, "several partitions hold filesystems, choose one; "
                   + _describe_parts(disk, usable))

    def mount_dev(self, disk: Disk, part: int | None = None, fstype: str | None = None,
                  flags: int = 0, options: str = "") -> str:
        """Mount the whole disk or partition ``part`` under /mnt; return the mount path.

        Without ``fstype`` the type is detected from the superblock magic;
        without ``part`` the only mountable partition is chosen (or the whole
        disk when it has no partition table).
        """
        with self.lock:
            bdev = self._choose(disk, part)
            if fstype is None:
                fstype = self.detect(bdev)
                if fstype is None:
                    raise kerr(errno.EINVAL, disk.path if bdev is disk.bdev else
                               f"{disk.path} partition {bdev.partno}",
                               "no ext2/ext3/ext4, btrfs or xfs filesystem found")
            elif self.registry.get(fstype) is None:
                raise kerr(errno.ENODEV, fstype, "unknown filesystem type; known: "
                           + ", ".join(n for n in self.registry.names() if n != "ramfs"))
            if disk.readonly:
                flags |= uapi.MS_RDONLY
            target = "/mnt/" + bdev.name
            try:
                self.sys.mkdir(target, 0o755)
            except FileExistsError:
                pass
            try:
                self.sys.mount("/dev/" + bdev.name, target, fstype, flags, options)
            except KernelError as e:
                if e.filename is None or e.filename.startswith("/dev/"):
                    e.filename = disk.path if bdev is disk.bdev else \
                        f"{disk.path} partition {bdev.partno}"
                raise
            log.info("mounted %s (%s) on %s", bdev.name, fstype, target)
            return target

    def umount(self, path: str, flags: int = 0) -> None:
        with self.lock:
            self.sys.umount2(path, flags)
            log.info("unmounted %s", path)

    def fstype_of(self, path: str) -> str:
        """The filesystem type mounted at ``path`` (after detection)."""
        with self.lock:
            res, _ = self.sys._resolve(uapi.AT_FDCWD, path, True)
            return res.mnt.sb.fstype

    # -- shutdown --------------------------------------------------------------------------
    def halt(self) -> None:
        """Close every file, unmount everything cleanly, flush and detach the disks."""
        with self.lock:
            if self.halted:
                return
            errors: list[BaseException] = []
            task = self.init_task
            for fd, _f in task.files.files():
                try:
                    self.sys.close(fd)
                except OSError as e:
                    errors.append(e)
            root = Path(self.root_mount, self.root_mount.root)
            task.set_cwd(root)
            for mnt in sorted(self.mounts.all(), key=_depth, reverse=True):
                if mnt.parent is None:
                    continue
                try:
                    do_umount(self.mounts, mnt, 0, False)
                except BaseException as e:  # keep going: every disk must be released
                    errors.append(e)
                    log.error("unmount of %s failed: %s", mnt.source, e)
            try:
                kill_sb(self.root_mount.sb)
            except BaseException as e:
                errors.append(e)
            for disk in self.disks:
                try:
                    disk.gendisk.shutdown()
                finally:
                    disk.device.backend.close()
            self.halted = True
            logging.getLogger("kernel").removeHandler(self.dmesg)
            log.debug("halted")
            if errors:
                raise errors[0]


# fork(): every kernel's lock is taken first, so no system call is half done in the copy,
# and its disks are idle
_LIVE: weakref.WeakSet[Kernel] = weakref.WeakSet()
_FORKING: list[Kernel] = []


def _before_fork() -> None:
    _FORKING[:] = list(_LIVE)
    for k in _FORKING:
        k.lock.acquire()
        for disk in k.disks:  # and no request is in flight (writes issued behind)
            disk.gendisk.drain(check=False)


def _after_fork_in_parent() -> None:
    for k in reversed(_FORKING):
        k.lock.release()
    _FORKING.clear()


def _after_fork_in_child() -> None:
    for k in _FORKING:
        k._after_fork_in_child()
    _FORKING.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def _depth(m: Any) -> int:
    d = 0
    while m.parent is not None:
        d += 1
        m = m.parent
    return d


def _disk_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return letters


def _describe_parts(disk: Disk, parts: list[Partition] | None = None) -> str:
    parts = disk.partitions if parts is None else parts
    if not parts:
        return "the disk has no partitions"
    return "partitions: " + "; ".join(p.describe() for p in parts)

