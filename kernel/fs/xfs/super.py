"""Mounting an XFS filesystem read-only (fs/xfs/xfs_super.c, xfs_mount.c).

Mount reads and validates the primary superblock, finds the log's head and
tail and, when the filesystem was not cleanly unmounted, replays the log
into an in-memory overlay of the device (``log_recover``), so every later
read sees the recovered metadata while the image stays untouched.
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ...errors import corrupted, kerr
from ...uapi import MS_RDONLY
from ...vfs.inode import Inode, StatFs, SuperBlock
from . import ondisk as od
from .ag import read_agf, read_agi
from .inode import XfsInode
from .log_recover import recover
from .sb import XfsGeometry, read_geometry

if TYPE_CHECKING:
    from ...block.blkdev import BlockDevice
    from ...block.buffer import BufferCache

log = logging.getLogger(__name__)

# mount options Linux's xfs accepts; only norecovery changes what we do
_KNOWN_OPTS = {
    "ro", "rw", "norecovery", "nouuid", "inode32", "inode64", "noatime", "relatime", "atime",
    "nodiratime", "noalign", "attr2", "noattr2", "ikeep", "noikeep", "largeio", "nolargeio",
    "filestreams", "wsync", "dax", "discard", "nodiscard", "grpid", "bsdgroups", "nogrpid",
    "sysvgroups", "noquota", "usrquota", "uquota", "uqnoenforce", "quota", "grpquota", "gquota",
    "gqnoenforce", "prjquota", "pquota", "pqnoenforce", "lazytime", "nolazytime", "strictatime",
}
_VALUE_OPTS = {"logbufs", "logbsize", "logdev", "rtdev", "biosize", "allocsize", "sunit",
               "swidth", "su", "sw", "context", "fscontext", "defcontext", "rootcontext",
               "max_atomic_write"}


class DaCache:
    """A small LRU of assembled or parsed directory/attribute blocks."""

    def __init__(self, limit: int = 2048) -> None:
        self.limit = limit
        self._d: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> Any:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        self._d[key] = value
        if len(self._d) > self.limit:
            self._d.popitem(last=False)


def parse_options(options: str) -> set[str]:
    """The flag options given; EINVAL for anything Linux's xfs would reject."""
    flags: set[str] = set()
    for opt in filter(None, (o.strip() for o in options.split(","))):
        key = opt.split("=", 1)[0]
        if "=" in opt and key in _VALUE_OPTS or opt in _KNOWN_OPTS:
            flags.add(key)
            continue
        raise kerr(errno.EINVAL, opt, "xfs: unknown mount option")
    return flags


class XfsSuper(SuperBlock):
    fstype = "xfs"
    magic = od.XFS_SUPER_MAGIC

    def __init__(self, kernel: Any, bdev: BlockDevice, flags: int, options: str) -> None:
        super().__init__(kernel, bdev, flags)
        opts = parse_options(options)
        if not self.rdonly or "rw" in opts:
            raise kerr(errno.EROFS, f"/dev/{bdev.name}",
                       "xfs: read-write mounts are not supported yet")
        if "logdev" in opts or "rtdev" in opts:
            raise kerr(errno.EOPNOTSUPP, f"/dev/{bdev.name}",
                       "xfs: external log and realtime devices are not supported")
        self.bcache: BufferCache = kernel.bcache
        self.xdev: BlockDevice = bdev
        self.geo: XfsGeometry = self._read_sb(bdev)
        geo = self.geo
        if geo.logstart == 0:
            raise kerr(errno.EOPNOTSUPP, f"/dev/{bdev.name}",
                       "xfs: filesystems with an external log are not supported")
        self.recovered = 0  # transactions replayed at mount
        overlay = recover(self, norecovery="norecovery" in opts)
        if overlay is not None:
            self.bcache.invalidate(bdev)
            self.xdev = overlay
            self.geo = self._read_sb(overlay)
        self.dacache = DaCache()
        self.blocksize = self.geo.blocksize
        self.time_gran = 1
        self.max_links = 0xFFFFFFFF
        self.maxbytes = (1 << 63) - 1
        root = self.iget_xfs(self.geo.rootino)
        if not root.is_dir:
            raise corrupted(f"inode {self.geo.rootino}", "the root inode is not a directory")
        self.root = root

    def _read_sb(self, dev: BlockDevice) -> XfsGeometry:
        first = dev.read(0, min(512, dev.size)) if dev.size >= 512 else bytearray()
        if len(first) < 512:
            raise kerr(errno.EINVAL, f"/dev/{dev.name}", "device too small for XFS")
        ss = od.xfs_dsb.get(first, 0, "sb_sectsize")
        data = first
        if 512 < ss <= 32768 and ss & (ss - 1) == 0 and ss <= dev.size:
            data = dev.read(0, ss)
        return read_geometry(data, dev.size, f"/dev/{dev.name}: superblock")

    # -- inodes ------------------------------------------------------------------------------
    def iget_xfs(self, ino: int) -> XfsInode:
        return self.iget(ino, self._load)  # type: ignore[return-value]

    def _load(self, ino: int) -> Inode:
        geo = self.geo
        agno, agbno, idx = geo.ino_location(ino)
        bs = geo.blocksize
        base = agno * geo.agblocks
        bpc = geo.blocks_per_cluster
        bc = self.bcache
        if bpc > 1 and bc.peek(self.xdev, base + agbno, bs) is None:
            # a miss reads the inode's whole cluster: its neighbours are usually next
            start = agbno - agbno % bpc
            n = min(bpc, geo.ag_length(agno) - start)
            buf = bc.bread_many(self.xdev, base + start, n, bs)[agbno - start]
        else:
            buf = bc.bread(self.xdev, base + agbno, bs)
        off = idx * geo.inodesize
        return XfsInode(self, ino, bytes(buf.data[off:off + geo.inodesize]))

    # -- superblock operations ---------------------------------------------------------------
    def statfs(self) -> StatFs:
        geo = self.geo
        free = 0
        icount = ifree = 0
        for agno in range(geo.agcount):
            agf = read_agf(self, agno)
            free += agf.agf_freeblks + agf.agf_flcount + agf.agf_btreeblks
            agi = read_agi(self, agno)
            icount += agi.agi_count
            ifree += agi.agi_freecount
        blocks = geo.dblocks - (geo.logblocks if geo.logstart else 0)
        # the allocator keeps 4 blocks per AG and the AGFL minimums out of reach
        free = max(0, free - geo.agcount * 8)
        files = min(icount + free * geo.inopblock, (1 << 64) - 1)
        return StatFs(od.XFS_SUPER_MAGIC, geo.blocksize, blocks, free, free, files,
                      files - (icount - ifree), f_namelen=255)

    def remount(self, flags: int, options: str) -> None:
        if not flags & MS_RDONLY:
            raise kerr(errno.EROFS, "xfs", "xfs: read-write mounts are not supported yet")
        parse_options(options)

    def put_super(self) -> None:
        self.bcache.invalidate(self.xdev)
        if self.xdev is not self.bdev and self.bdev is not None:
            self.bcache.invalidate(self.bdev)

    def show_options(self) -> str:
        return "ro"


def mount(kernel: object, bdev: BlockDevice | None, flags: int, options: str) -> SuperBlock:
    """``XfsType.mount`` (the type itself is in the package, light to import)."""
    if bdev is None:
        raise kerr(errno.ENOTBLK, "xfs")
    return XfsSuper(kernel, bdev, flags, options)
