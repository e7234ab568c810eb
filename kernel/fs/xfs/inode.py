"""In-memory inodes read from disk (libxfs/xfs_inode_buf.c, xfs_inode_fork.c, xfs_iops.c).

An inode is found from its number alone (AG, block in the AG, index in the
block), read with the rest of its cluster, verified (magic, version, CRC,
number, UUID, fork formats and sizes) and kept as a copy of its bytes. Forks
are decoded lazily: the extent map (inline extents or the bmap btree) on
first use, directory and attribute tables on first lookup or listing.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ...errors import corrupted, kerr
from ...uapi import S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, makedev
from ...vfs.filemap import read_mapped, read_mapped_into
from ...vfs.inode import Extent, Inode
from . import attr, dir2
from . import ondisk as od
from .bmap import ExtentMap, decode_records, read_btree
from .cksum import crc_ok
from .da_btree import ATTR_FORK, DATA_FORK
from .symlink import read_target

if TYPE_CHECKING:
    from .super import XfsSuper

# the v3 fields _decode wants, at xfs_dinode's offsets: di_flags2, then di_crtime, di_ino
# and di_uuid (which follow each other)
_F2, _CRT = od.xfs_dinode.offset_of("di_flags2"), od.xfs_dinode.offset_of("di_crtime")
assert od.xfs_dinode.offset_of("di_uuid") == od.xfs_dinode.offset_of("di_ino") + 8 == _CRT + 16
_v3 = struct.Struct(f">{_F2}xQ{_CRT - _F2 - 8}xQQ16s")
_u32 = struct.Struct(">I")
_NS = 1_000_000_000
_BIGTIME_OFF = od.XFS_BIGTIME_EPOCH_OFFSET * _NS
_DEV_FORMATS = (od.XFS_DINODE_FMT_DEV,)
_VALID_FMT = {
    S_IFREG: (od.XFS_DINODE_FMT_EXTENTS, od.XFS_DINODE_FMT_BTREE),
    S_IFDIR: (od.XFS_DINODE_FMT_LOCAL, od.XFS_DINODE_FMT_EXTENTS, od.XFS_DINODE_FMT_BTREE),
    S_IFLNK: (od.XFS_DINODE_FMT_LOCAL, od.XFS_DINODE_FMT_EXTENTS, od.XFS_DINODE_FMT_BTREE),
    S_IFCHR: _DEV_FORMATS, S_IFBLK: _DEV_FORMATS, S_IFIFO: _DEV_FORMATS, S_IFSOCK: _DEV_FORMATS,
}


def _ts(v: int, big: bool) -> int:
    if big:
        return v - _BIGTIME_OFF
    sec = v >> 32
    if sec & 0x80000000:
        sec -= 1 << 32
    return sec * _NS + (v & 0xFFFFFFFF)


class XfsInode(Inode):
    __slots__ = ("raw", "format", "aformat", "diflags", "diflags2", "forkoff", "nextents",
                 "anextents", "_maps", "dir_fmt", "dir_table", "xattr_list", "xattr_index", "_target",
                 "dir_seen", "lookups")

    sb: XfsSuper

    def __init__(self, sb: XfsSuper, ino: int, raw: bytes) -> None:
        super().__init__(sb, ino)
        self.raw = raw
        self._maps: list[ExtentMap | None] = [None, None]
        self.dir_fmt = -1
        self.dir_table: dict[bytes, tuple[int, int]] | None = None
        # names met while readdir walks a leaf or node directory from its start: once it
        # reaches the end they become dir_table, and lookups stop hashing (a read-only fs)
        self.dir_seen: tuple[dict[bytes, tuple[int, int]], int] | None = None
        self.lookups = 0  # of names in this leaf or node directory, before it has dir_table
        self.xattr_list: list[tuple[int, bytes, bytes | None, int, int]] | None = None
        self.xattr_index: dict[tuple[int, bytes], tuple[bytes | None, int, int]] | None = None
        self._target: bytes | None = None
        self._decode()

    # -- decoding and verification (xfs_dinode_verify) ----------------------------------
    def _decode(self) -> None:
        sb = self.sb
        geo = sb.geo
        raw = self.raw
        ino = self.ino
        what = f"inode {ino}"
        (magic, mode, version, fmt, onlink, uid, gid, nlink) = _head.unpack_from(raw, 0)
        if magic != od.XFS_DINODE_MAGIC:
            raise corrupted(what, f"bad inode magic {magic:#x}")
        flags2 = crtime = 0
        if geo.crc:
            flags2, crtime, di_ino, di_uuid = _v3.unpack_from(raw, 0)
            if version != 3:
                raise corrupted(what, f"inode version {version} on a v5 filesystem")
            if not crc_ok(raw, od.XFS_DINODE_CRC_OFF):
                raise corrupted(what, "metadata checksum mismatch")
            if di_ino != ino or di_uuid != geo.meta_uuid:
                raise corrupted(what, f"inode header names inode {di_ino}")
        elif version not in (1, 2):
            raise corrupted(what, f"inode version {version} on a v4 filesystem")
        if mode == 0:
            raise corrupted(what, "a directory entry points at a free inode")
        ftype = mode & S_IFMT
        valid = _VALID_FMT.get(ftype)
        if valid is None:
            raise corrupted(what, f"bad file type in mode {mode:o}")
        if fmt not in valid:
            raise corrupted(what, f"data fork format {fmt} is invalid for mode {mode:o}")
        (big_next, atime, mtime, ctime, size, nblocks, _extsize, nexts32, anext16, forkoff,
         aformat, _dmev, _dmst, flags, gen) = _mid.unpack_from(raw, 24)
        if flags2 & od.XFS_DIFLAG2_NREXT64:
            if not geo.nrext64:
                raise corrupted(what, "large extent counts without the nrext64 feature")
            self.nextents = big_next
            self.anextents = nexts32
        else:
            self.nextents = nexts32
            self.anextents = anext16
        core = geo.dinode_core
        literal = geo.inodesize - core
        if forkoff and forkoff * 8 >= literal:
            raise corrupted(what, f"attribute fork offset {forkoff} beyond the inode")
        if forkoff:
            if aformat not in (od.XFS_DINODE_FMT_LOCAL, od.XFS_DINODE_FMT_EXTENTS,
                               od.XFS_DINODE_FMT_BTREE):
                raise corrupted(what, f"bad attribute fork format {aformat}")
            self.aformat: int | None = aformat
        else:
            if self.anextents:
                raise corrupted(what, "attribute extents without an attribute fork")
            self.aformat = None
        if size >> 63:
            raise corrupted(what, "negative size")
        self.format = fmt
        self.forkoff = forkoff
        self.diflags = flags
        self.diflags2 = flags2
        for fork, nexts, f in ((DATA_FORK, self.nextents, fmt), (ATTR_FORK, self.anextents,
                                                               self.aformat)):
            if f == od.XFS_DINODE_FMT_EXTENTS and nexts * 16 > self.fork_size(fork):
                raise corrupted(what, f"{nexts} extents do not fit in the inode fork")
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.nlink = nlink if version > 1 else onlink
        self.size = size
        self.blocks = nblocks << (geo.blocklog - 9)
        big = bool(flags2 & od.XFS_DIFLAG2_BIGTIME)
        self.atime_ns = _ts(atime, big)
        self.mtime_ns = _ts(mtime, big)
        self.ctime_ns = _ts(ctime, big)
        self.btime_ns = _ts(crtime, big) if geo.crc else None
        self.generation = gen
        if fmt == od.XFS_DINODE_FMT_DEV and ftype in (S_IFCHR, S_IFBLK):
            dev = _u32.unpack_from(raw, core)[0]
            self.rdev = makedev((dev >> od.XFS_DEV_BITSMINOR) & 0x1FF, dev & od.XFS_DEV_MAXMIN)

    # -- forks ------------------------------------------------------------------------------
    def fork_size(self, fork: int) -> int:
        literal = self.sb.geo.inodesize - self.sb.geo.dinode_core
        if fork == DATA_FORK:
            return self.forkoff * 8 if self.forkoff else literal
        return literal - self.forkoff * 8 if self.forkoff else 0

    def fork_data(self, fork: int) -> memoryview:
        core = self.sb.geo.dinode_core
        start = core if fork == DATA_FORK else core + self.forkoff * 8
        return memoryview(self.raw)[start:start + self.fork_size(fork)]

    def fork_map(self, fork: int) -> ExtentMap:
        """The fork's extent map (empty for local and device forks), built once."""
        emap = self._maps[fork]
        if emap is not None:
            return emap
        emap = ExtentMap()
        fmt = self.format if fork == DATA_FORK else self.aformat
        nexts = self.nextents if fork == DATA_FORK else self.anextents
        if fmt == od.XFS_DINODE_FMT_EXTENTS and not nexts:
            # an empty fork (an attribute fork whose last attribute went keeps this form)
            self._maps[fork] = emap
            return emap
        what = f"inode {self.ino} {'data' if fork == DATA_FORK else 'attribute'} fork"
        rt = fork == DATA_FORK and bool(self.diflags & od.XFS_DIFLAG_REALTIME)
        if fmt == od.XFS_DINODE_FMT_EXTENTS:
            decode_records(self.sb, self.fork_data(fork), 0, nexts, emap, what, rt)
        elif fmt == od.XFS_DINODE_FMT_BTREE:
            read_btree(self.sb, self.ino, self.fork_data(fork), self.fork_size(fork), emap, what,
                       nexts, rt)
            if len(emap) != nexts:
                raise corrupted(what, f"btree holds {len(emap)} extents, inode says {nexts}")
        self._maps[fork] = emap
        return emap

    def _check_rt(self) -> None:
        if self.diflags & od.XFS_DIFLAG_REALTIME:
            raise kerr(errno.EOPNOTSUPP, f"inode {self.ino}",
                       "xfs: realtime files are not supported")

    # -- VFS operations ------------------------------------------------------------------------
    def lookup(self, name: bytes) -> Inode | None:
        if not self.is_dir:
            raise kerr(errno.ENOTDIR)
        if self.dir_fmt < 0:
            self.dir_fmt = dir2.dir_format(self)
        hit = dir2.lookup(self, name)
        if hit is None:
            return None
        return self.sb.iget_xfs(hit[0])

    def iterate(self, pos: int) -> Iterator[tuple[bytes, int, int, int]]:
        if not self.is_dir:
            raise kerr(errno.ENOTDIR)
        if self.dir_fmt < 0:
            self.dir_fmt = dir2.dir_format(self)
        return dir2.iterate(self, pos)

    def readlink(self) -> bytes:
        if not self.is_lnk:
            raise kerr(errno.EINVAL)
        if self._target is None:
            self._target = read_target(self)
        return self._target

    def read(self, offset: int, size: int) -> bytes:
        if self.is_dir:
            raise kerr(errno.EISDIR)
        self._check_rt()
        return read_mapped(self, self.sb.xdev, offset, size)

    def read_into(self, offset: int, dest: memoryview) -> int:
        if self.is_dir:
            raise kerr(errno.EISDIR)
        self._check_rt()
        return read_mapped_into(self, self.sb.xdev, offset, dest)

    def extents(self, start: int, end: int) -> Iterator[Extent]:
        self._check_rt()
        if not self.is_reg:
            return
        for off, count, pblk, unw in self.fork_map(DATA_FORK).find(start, end):
            yield Extent(off, count, pblk, unw)

    def mapped_run(self, first: int, last: int) -> int:
        self._check_rt()
        if not self.is_reg:
            return -1
        return self.fork_map(DATA_FORK).mapped_run(first, last)

    def listxattr(self) -> list[bytes]:
        return attr.listxattr(self)

    def getxattr(self, name: bytes) -> bytes:
        return attr.getxattr(self, name)

    def setxattr(self, name: bytes, value: bytes, flags: int) -> None:
        raise kerr(errno.EROFS, name)

    def removexattr(self, name: bytes) -> None:
        raise kerr(errno.EROFS, name)

    def mark_dirty(self) -> None:
        pass


_head = struct.Struct(">HHBBHIII")
_mid = struct.Struct(">QQQQQQIIHBbIHHI")
