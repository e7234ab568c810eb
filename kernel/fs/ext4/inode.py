"""ext4 in-memory inodes (fs/ext4/inode.c, read side).

An ``Ext4Inode`` is built from the raw on-disk inode (``super.read_inode_raw``
has verified its checksum) and caches what reads need: the flattened block
map, the parsed directory, the attribute entries. Block maps come from
extents (``extents.py``), indirect blocks (``indirect.py``) or inline data
(``inline.py``); file reads go through ``read_mapped`` in one batch.
"""

from __future__ import annotations

import bisect
import errno
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ...errors import corrupted, kerr
from ...uapi import S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, makedev
from ...vfs.filemap import read_mapped, read_mapped_into
from ...vfs.inode import Extent, Inode, NewInode, SetAttr
from . import dir as dirmod
from . import file as f
from . import namei
from . import write as w
from . import xattr as xa
from .csum import inode_seed
from .extents import load_extents
from .indirect import load_indirect
from .inline import read_inline
from .ondisk import (
    EXT4_CASEFOLD_FL,
    EXT4_EA_INODE_FL,
    EXT4_ENCRYPT_FL,
    EXT4_EXTENTS_FL,
    EXT4_GOOD_OLD_INODE_SIZE,
    EXT4_HUGE_FILE_FL,
    EXT4_INLINE_DATA_FL,
    EXT4_N_BLOCKS,
    I_ATIME_EXTRA_END,
    I_CRTIME_END,
    I_CRTIME_EXTRA_END,
    I_CTIME_EXTRA_END,
    I_MTIME_EXTRA_END,
    INODE_BASE,
    INODE_EXTRA,
)

if TYPE_CHECKING:
    from .super import Ext4Super

_VALID_TYPES = (S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK)
_NS = 1_000_000_000


INODE_EXTRA_ISIZE = struct.Struct("<H")  # i_extra_isize alone, for inodes too short for more


def _xtime(sec: int, extra: int | None) -> int:
    """ext4 time: signed 32-bit seconds, plus (extra) 2 epoch bits and 30 nanosecond bits."""
    if extra is None:
        return sec * _NS
    return (sec + ((extra & 3) << 32)) * _NS + (extra >> 2)


class Ext4Inode(Inode):
    __slots__ = ("i_flags", "i_block", "file_acl", "extra_isize", "raw", "csum_seed", "_runs",
                 "_starts", "dir_cache", "_xattrs", "map_lo", "map_hi", "tblocks", "dir_state",
                 "dtime", "orphan_next", "dir_names", "lookups", "owed")

    sb: Ext4Super

    def __init__(self, sb: Ext4Super, ino: int, raw: bytes, seed: int | None = None) -> None:
        """``seed``: the inode's checksum seed, when the caller has it already."""
        super().__init__(sb, ino)
        (mode, uid, size_lo, atime, ctime, mtime, _dtime, gid, links, blocks_lo, flags,
         _version, i_block, generation, acl_lo, size_hi, _faddr, blocks_hi, acl_hi, uid_hi,
         gid_hi, _csum_lo, _res) = INODE_BASE.unpack_from(raw, 0)
        what = "ext4 inode %d"  # % ino, on the error paths only
        self.raw = raw
        self.mode = mode
        ftype = mode & S_IFMT
        if ftype not in _VALID_TYPES:
            raise corrupted(what % ino, f"invalid file type in mode {mode:#o}")
        if links == 0:
            raise corrupted(what % ino, "deleted inode referenced (no links)")
        self.nlink = links
        self.uid = uid | uid_hi << 16
        self.gid = gid | gid_hi << 16
        self.i_flags = flags
        self.i_block = i_block
        self.generation = generation
        self.file_acl = acl_lo | acl_hi << 32
        size = size_lo
        if ftype == S_IFREG or sb.large_dir:
            size |= size_hi << 32
        limit = sb.maxbytes if flags & EXT4_EXTENTS_FL else sb.maxbytes_indirect
        if size >= 1 << 63 or (ftype == S_IFREG and size > limit):
            raise corrupted(what % ino, f"bad i_size {size} (the largest file is {limit} bytes)")
        self.size = size
        blocks = blocks_lo
        if sb.huge_file:
            blocks |= blocks_hi << 32
            if flags & EXT4_HUGE_FILE_FL:
                blocks *= sb.blocksize >> 9
        self.blocks = blocks
        extra = 0
        ex = None
        if len(raw) > EXT4_GOOD_OLD_INODE_SIZE:
            if len(raw) >= EXT4_GOOD_OLD_INODE_SIZE + INODE_EXTRA.size:
                ex = INODE_EXTRA.unpack_from(raw, EXT4_GOOD_OLD_INODE_SIZE)
                extra = ex[0]
            else:
                extra = INODE_EXTRA_ISIZE.unpack_from(raw, EXT4_GOOD_OLD_INODE_SIZE)[0]
            if EXT4_GOOD_OLD_INODE_SIZE + extra > len(raw) or extra & 3:
                raise corrupted(what % ino, f"bad i_extra_isize {extra}")
            if not extra:
                ex = None
            elif ex is None:
                buf = raw[EXT4_GOOD_OLD_INODE_SIZE:EXT4_GOOD_OLD_INODE_SIZE + 32]
                ex = INODE_EXTRA.unpack(buf.ljust(32, b"\0"))
        self.extra_isize = extra
        # EXT4_FITS_IN_INODE: an extra field counts only inside i_extra_isize
        if ex is not None and extra >= I_CRTIME_EXTRA_END:
            # the usual large inode: every time with its extra word
            cx, mx, ax, crt, crx = ex[2:7]
            self.ctime_ns = (ctime + ((cx & 3) << 32)) * _NS + (cx >> 2)
            self.mtime_ns = (mtime + ((mx & 3) << 32)) * _NS + (mx >> 2)
            self.atime_ns = (atime + ((ax & 3) << 32)) * _NS + (ax >> 2)
            self.btime_ns = (crt + ((crx & 3) << 32)) * _NS + (crx >> 2)
        elif ex is not None:
            self.ctime_ns = _xtime(ctime, ex[2] if extra >= I_CTIME_EXTRA_END else None)
            self.mtime_ns = _xtime(mtime, ex[3] if extra >= I_MTIME_EXTRA_END else None)
            self.atime_ns = _xtime(atime, ex[4] if extra >= I_ATIME_EXTRA_END else None)
            if extra >= I_CRTIME_END:
                self.btime_ns = _xtime(ex[5], ex[6] if extra >= I_CRTIME_EXTRA_END else None)
        else:
            self.ctime_ns = ctime * _NS
            self.mtime_ns = mtime * _NS
            self.atime_ns = atime * _NS
        if ftype in (S_IFCHR, S_IFBLK):
            w0 = int.from_bytes(i_block[0:4], "little")
            if w0:  # old encoding: 8-bit major and minor
                self.rdev = makedev((w0 >> 8) & 0xFF, w0 & 0xFF)
            else:  # new encoding (new_encode_dev)
                w1 = int.from_bytes(i_block[4:8], "little")
                self.rdev = makedev((w1 & 0xFFF00) >> 8, (w1 & 0xFF) | ((w1 >> 12) & 0xFFF00))
        if seed is None:
            seed = inode_seed(sb.csum_seed, ino, generation) if sb.metadata_csum else 0
        self.csum_seed = seed
        self._init_state()

    @classmethod
    def fresh(cls, sb: Ext4Super, ino: int, raw: bytes, mode: int, uid: int, gid: int,
              flags: int, i_block: bytes, generation: int, extra: int, now: int) -> Ext4Inode:
        """A new inode whose slot holds ``raw`` (packed from these very fields, with one
        link): set from them rather than decoded and checked again (a copy makes one per
        file). The tests check it matches what decoding its stored slot gives."""
        inode = cls.__new__(cls)
        Inode.__init__(inode, sb, ino)
        inode.raw = raw
        inode.mode = mode
        inode.nlink = 1
        inode.uid = uid
        inode.gid = gid
        inode.i_flags = flags
        inode.i_block = i_block
        inode.generation = generation
        inode.file_acl = 0
        inode.extra_isize = extra
        inode.atime_ns = inode.mtime_ns = inode.ctime_ns = now
        inode.btime_ns = now if extra >= I_CRTIME_EXTRA_END else None
        inode.csum_seed = inode_seed(sb.csum_seed, ino, generation) if sb.metadata_csum else 0
        inode._init_state()
        return inode

    def _init_state(self) -> None:
        """What is not on the disk: caches, and the write side's state."""
        self._runs: list[tuple[int, int, int, bool]] | None = None
        self._starts: list[int] = []
        self.dir_cache: object | None = None
        self.dir_names: dict[bytes, int] | None = None  # read-only: every name, once looked up often
        self.lookups = 0
        self._xattrs: list[xa.Entry] | None = None
        # write side: the map range changed since it was stored, the extent tree's blocks,
        # the directory's write state, deletion time and the orphan chain
        self.map_lo, self.map_hi = 1 << 62, 0
        self.tblocks: list[int] | None = None
        self.owed = 0  # blocks held back for the next store of the map (file._touch)
        self.dir_state: object | None = None
        self.dtime = 0
        self.orphan_next = 0

    # -- helpers -----------------------------------------------------------------------
    @property
    def inline(self) -> bool:
        return bool(self.i_flags & EXT4_INLINE_DATA_FL)

    def _no_crypt(self) -> None:
        if self.i_flags & EXT4_ENCRYPT_FL:
            raise kerr(errno.EOPNOTSUPP, f"ext4 inode {self.ino}",
                       "encrypted inode: the encrypt feature is not supported")

    def check_dir_access(self) -> None:
        """Directories we cannot interpret: EOPNOTSUPP naming the feature."""
        self._no_crypt()
        if self.i_flags & EXT4_CASEFOLD_FL:
            raise kerr(errno.EOPNOTSUPP, f"ext4 inode {self.ino}",
                       "casefolded directory: the casefold feature is not supported")

    def runs(self) -> list[tuple[int, int, int, bool]]:
        """The block map, flattened and cached (extents or indirect blocks)."""
        runs = self._runs
        if runs is None:
            if self.inline:
                runs = []
            elif self.i_flags & EXT4_EXTENTS_FL:
                runs = load_extents(self)
            else:
                if self.sb.bigalloc:
                    raise corrupted(f"ext4 inode {self.ino}", "indirect blocks on a bigalloc fs")
                runs = load_indirect(self)
            self._runs = runs
            self._starts = [r[0] for r in runs]
        return runs

    def invalidate_map(self) -> None:
        """Forget the cached block map (the write path calls this after changing it)."""
        self._runs = None
        self._starts = []

    def bmap(self, lblk: int) -> int:
        """The physical block of logical block ``lblk``, 0 for a hole (or unwritten)."""
        runs = self.runs()
        i = bisect.bisect_right(self._starts, lblk) - 1
        if i >= 0:
            s, n, p, unwritten = runs[i]
            if lblk < s + n and not unwritten:
                return p + lblk - s
        return 0

    # -- data -----------------------------------------------------------------------------
    def extents(self, start: int, end: int) -> Iterator[Extent]:
        if self.inline:
            yield from super().extents(start, end)
            return
        runs = self.runs()
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        n = len(runs)
        while i < n:
            s, c, p, u = runs[i]
            if s >= end:
                break
            if s + c > start:
                yield Extent(s, c, p, u)
            i += 1

    def mapped_run(self, first: int, last: int) -> int:
        if self.inline:
            return -1
        runs = self.runs()
        i = bisect.bisect_right(self._starts, first) - 1
        if i >= 0:
            s, c, p, u = runs[i]
            if last <= s + c and not u:
                return p + first - s
        return -1

    def read(self, offset: int, size: int) -> bytes:
        self._no_crypt()
        if self.sb._data:
            self.sb.flush_data()
        if self.inline:
            return read_inline(self)[offset:offset + size]
        return read_mapped(self, self.sb.io, offset, size)

    def read_into(self, offset: int, dest: memoryview) -> int:
        self._no_crypt()
        if self.sb._data:
            self.sb.flush_data()
        if self.inline:
            return super().read_into(offset, dest)
        return read_mapped_into(self, self.sb.io, offset, dest)

    def readlink(self) -> bytes:
        if not self.is_lnk:
            raise kerr(errno.EINVAL)
        self._no_crypt()
        what = f"ext4 symlink inode {self.ino}"
        if self.inline:
            return read_inline(self)
        if self.is_fast_symlink():
            if self.size >= EXT4_N_BLOCKS * 4:
                raise corrupted(what, f"fast symlink of size {self.size}")
            return self.i_block[:self.size]
        if self.size == 0 or self.size > self.sb.blocksize:
            raise corrupted(what, f"bad symlink size {self.size}")
        self.sb.flush_data()
        return read_mapped(self, self.sb.io, 0, self.size)

    def is_fast_symlink(self) -> bool:
        """Target in i_block: no data blocks beyond a possible xattr block (ext4's rule)."""
        if self.i_flags & EXT4_EA_INODE_FL:
            return 0 < self.size < EXT4_N_BLOCKS * 4
        ea_blocks = self.sb.cluster_size >> 9 if self.file_acl else 0
        return self.blocks - ea_blocks == 0

    # -- directories --------------------------------------------------------------------------
    def lookup(self, name: bytes) -> Inode | None:
        if not self.is_dir:
            raise kerr(errno.ENOTDIR)
        self.check_dir_access()
        ino = namei.lookup(self, name)
        if ino is None:
            return None
        return self.sb.get_inode(ino, (self.ino, name))

    def iterate(self, pos: int) -> Iterator[tuple[bytes, int, int, int]]:
        if not self.is_dir:
            raise kerr(errno.ENOTDIR)
        self.check_dir_access()
        return dirmod.iterate(self, pos)

    # -- extended attributes -----------------------------------------------------------------------
    def xattr_entries(self) -> list[xa.Entry]:
        entries = self._xattrs
        if entries is None:
            entries = self._xattrs = xa.all_entries(self)
        return entries

    def listxattr(self) -> list[bytes]:
        return xa.list_names(self.xattr_entries())

    def getxattr(self, name: bytes) -> bytes:
        return xa.get_value(self, self.xattr_entries(), name)

    # -- write side (a read-write mount; the VFS has checked permissions and arguments) --------
    def read_block(self, lblk: int) -> bytes:
        """One whole block of data (zeros for a hole)."""
        bs = self.sb.blocksize
        self.sb.flush_data()
        return read_mapped_block(self, lblk, bs)

    def _rw(self) -> None:
        if self.sb.rdonly:
            raise kerr(errno.EROFS)
        self._no_crypt()

    def create(self, name: bytes, spec: NewInode) -> Inode:
        self._rw()
        self.check_dir_access()
        return w.create(self, name, spec)

    def link(self, name: bytes, inode: Inode) -> None:
        self._rw()
        w.link(self, name, inode)  # type: ignore[arg-type]

    def unlink(self, name: bytes, inode: Inode) -> None:
        self._rw()
        w.unlink(self, name, inode)  # type: ignore[arg-type]

    def rmdir(self, name: bytes, inode: Inode) -> None:
        self._rw()
        w.rmdir(self, name, inode)  # type: ignore[arg-type]

    def rename(self, old_name: bytes, inode: Inode, new_dir: Inode, new_name: bytes,
               target: Inode | None, flags: int) -> None:
        self._rw()
        w.rename(self, old_name, inode, new_dir, new_name, target, flags)  # type: ignore[arg-type]

    def setattr(self, attr: SetAttr) -> None:
        self._rw()
        w.set_attr(self, attr)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        self._rw()
        return f.write(self, offset, data)

    def fallocate(self, mode: int, offset: int, length: int) -> None:
        self._rw()
        f.fallocate(self, mode, offset, length)

    def fsync(self, datasync: bool) -> None:
        self.sb.sync()

    def setxattr(self, name: bytes, value: bytes, flags: int) -> None:
        self._rw()
        xa.set_xattr(self, name, value, flags)

    def removexattr(self, name: bytes) -> None:
        self._rw()
        xa.set_xattr(self, name, None, 0)

    def mark_dirty(self) -> None:
        if not self.sb.rdonly:
            self.sb.dirty_inode(self)

    def evict(self) -> None:
        if not self.sb.rdonly:
            w.evict(self)


def read_mapped_block(inode: Ext4Inode, lblk: int, bs: int) -> bytes:
    for ext in inode.extents(lblk, lblk + 1):
        if ext.lblk <= lblk and not ext.unwritten:
            return bytes(inode.sb.io.read((ext.pblk + lblk - ext.lblk) * bs, bs))
    return bytes(bs)
