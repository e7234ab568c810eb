"""btrfs inodes (fs/btrfs/inode.c, dir-item.c, xattr.c: the read side).

An inode is the INODE_ITEM at (ino, 1, 0) of its subvolume's tree; its names
are INODE_REF/INODE_EXTREF items, its directory entries DIR_ITEM (by crc32c
name hash, for lookup) and DIR_INDEX (by sequence, for readdir) items, its
attributes XATTR_ITEMs and its data EXTENT_DATA items keyed by file offset.
A directory entry whose location is a ROOT_ITEM is a subvolume: it opens as
that subvolume's root directory, with the subvolume's own st_dev.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from ...errors import corrupted, kerr
from ...lib.crc import crc32c_raw
from ...uapi import DT_BLK, DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_REG, DT_SOCK, DT_UNKNOWN, S_IFDIR, makedev
from ...vfs.filemap import zero_fill
from ...vfs.inode import Extent, Inode, table_now
from ...vfs.namei import NUL, SLASH
from .compress import decompress
from .ondisk import (
    COMPRESS_NONE,
    DIR_INDEX_KEY,
    DIR_ITEM,
    DIR_ITEM_KEY,
    EMPTY_SUBVOL_DIR_OBJECTID,
    EXTENT_DATA_KEY,
    FILE_EXTENT,
    FILE_EXTENT_DISK,
    FILE_EXTENT_INLINE,
    FILE_EXTENT_PREALLOC,
    FILE_EXTENT_REG,
    INODE_ITEM,
    INODE_ITEM_KEY,
    INODE_NODATASUM,
    INODE_REF_KEY,
    ROOT_ITEM_KEY,
    XATTR_ITEM_KEY,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .super import BtrfsSuper, Subvol

_FT_TO_DT = (DT_UNKNOWN, DT_REG, DT_DIR, DT_CHR, DT_BLK, DT_FIFO, DT_SOCK, DT_LNK)
_NS = 1_000_000_000
_MAX_NAME = 255


def name_hash(name: bytes) -> int:
    """The DIR_ITEM/XATTR_ITEM key offset: crc32c seeded with ~1, not inverted."""
    return crc32c_raw(0xFFFFFFFE, name)


def _entries(data: memoryview, where: str) -> Iterator[tuple[tuple[int, int, int], int, bytes, bytes]]:
    """The (location key, type, name, data) entries packed in one DIR/XATTR item."""
    pos, end = 0, len(data)
    while pos < end:
        if pos + DIR_ITEM.size > end:
            raise corrupted(where, "directory item truncated")
        oid, typ, off, _transid, dlen, nlen, ftype = DIR_ITEM.unpack_from(data, pos)
        pos += DIR_ITEM.size
        if not nlen or nlen > 65535 or pos + nlen + dlen > end:
            raise corrupted(where, f"directory item with name length {nlen}, data {dlen}")
        name = bytes(data[pos:pos + nlen])
        value = bytes(data[pos + nlen:pos + nlen + dlen])
        pos += nlen + dlen
        yield (oid, typ, off), ftype, name, value


def _timespec(sec: int, nsec: int) -> int:
    """A btrfs_timespec (signed seconds, nanoseconds) in nanoseconds."""
    if sec >= 1 << 63:
        sec -= 1 << 64
    return sec * _NS + min(nsec, _NS - 1)


PREFETCH_EXTENTS = 32  # a file's extents read with its inode item, if it has no more


class FirstItems(NamedTuple):
    """What follows an inode item in its tree, read in the same walk: the xattr items and
    a file's extent items, each list None when it may be incomplete."""

    xattrs: list[memoryview] | None
    extents: list[tuple[int, memoryview]] | None


def first_items(tree, ino: int) -> tuple[memoryview | None, FirstItems]:  # noqa: ANN001
    """The inode item of ``ino`` and the items after it that every stat, listxattr and
    read wants (one walk of the tree instead of one per kind)."""
    inode_item = None
    xattrs: list[memoryview] = []
    extents: list[tuple[int, memoryview]] = []
    xattrs_done = extents_done = False
    for (_oid, typ, off), data in tree.items((ino, INODE_ITEM_KEY, 0), (ino + 1, 0, 0)):
        if typ == INODE_ITEM_KEY:
            if off == 0 and inode_item is None:
                inode_item = data
            continue
        if inode_item is None:
            break  # no inode item first: the caller reports it
        if typ == XATTR_ITEM_KEY:
            xattrs.append(data)
            continue
        if typ < XATTR_ITEM_KEY:
            continue  # references to the inode
        xattrs_done = True
        if typ != EXTENT_DATA_KEY or len(extents) == PREFETCH_EXTENTS:
            break  # a directory's entries, or a file of many extents: read when wanted
        extents.append((off, data))
    else:
        xattrs_done = extents_done = True  # every item of the inode was seen
    return inode_item, FirstItems(xattrs if xattrs_done else None,
                                  extents if extents_done else None)


class BtrfsInode(Inode):
    __slots__ = ("subvol", "flags", "_extents", "_names", "_seen", "lookups", "_first")

    sb: BtrfsSuper

    def __init__(self, sb: BtrfsSuper, subvol: Subvol, ino: int, item: memoryview | None,
                 first: FirstItems | None = None) -> None:
        super().__init__(sb, ino)
        self.subvol = subvol
        self._extents: list[tuple[int, int, int, memoryview]] | None = None
        self._first = first  # read with the inode item (first_items)
        # a directory read through by readdir keeps its names: lookups then need no search
        self._names: dict[bytes, tuple[int, int, int]] | None = None
        self._seen: tuple[dict[bytes, tuple[int, int, int]], int] | None = None
        self.lookups = 0  # names looked up before the directory had _names
        self.flags = 0
        if item is None:  # a subvolume that is not there any more: an empty directory
            self.mode = S_IFDIR | 0o755
            self.nlink = 1
            return
        if len(item) < INODE_ITEM.size:
            raise corrupted(f"btrfs inode {ino} (subvolume {subvol.id})", "inode item truncated")
        (gen, _transid, size, nbytes, _bg, nlink, uid, gid, mode, rdev, flags, _seq, _res,
         asec, ansec, csec, cnsec, msec, mnsec, osec, onsec) = INODE_ITEM.unpack_from(item, 0)
        if size >= 1 << 63 or mode & 0o170000 == 0:
            raise corrupted(f"btrfs inode {ino} (subvolume {subvol.id})",
                            f"bad size {size} or mode {mode:o}")
        self.generation = gen
        self.size = size
        bs = sb.blocksize  # btrfs_getattr: the bytes in use rounded up to whole sectors
        self.blocks = (nbytes + bs - 1) // bs * bs >> 9
        self.nlink = nlink
        self.uid, self.gid, self.mode = uid, gid, mode
        if mode & 0o170000 in (0o020000, 0o060000):
            # the kernel's internal dev_t (major << 20 | minor)
            self.rdev = makedev(rdev >> 20 & 0xFFF, rdev & 0xFFFFF)
        self.flags = flags
        if (asec | csec | msec | osec) < 1 << 63 and max(ansec, cnsec, mnsec, onsec) < _NS:
            # the usual times (after 1970, nanoseconds in range): _timespec's result
            self.atime_ns, self.ctime_ns = asec * _NS + ansec, csec * _NS + cnsec
            self.mtime_ns, self.btime_ns = msec * _NS + mnsec, osec * _NS + onsec
        else:
            self.atime_ns, self.ctime_ns = _timespec(asec, ansec), _timespec(csec, cnsec)
            self.mtime_ns, self.btime_ns = _timespec(msec, mnsec), _timespec(osec, onsec)

    @property
    def dev(self) -> int:
        return self.subvol.dev

    @property
    def tree(self):  # noqa: ANN201 - a ctree.Tree
        return self.subvol.tree

    # -- directories ---------------------------------------------------------------------
    def lookup(self, name: bytes) -> Inode | None:
        if not self.is_dir:
            raise kerr(errno.ENOTDIR)
        if self.ino == EMPTY_SUBVOL_DIR_OBJECTID and self.subvol.tree is None:
            return None
        names = self._names
        if names is not None:
            loc = names.get(name)
            if loc is None:
                return None
            return self.sb.inode_at(self.subvol, loc, f"btrfs directory {self.ino} entry {name!r}")
        self.lookups += 1
        if table_now(self.lookups, self.size):
            # looked up often (a walk of the tree): read every name once, as readdir does
            try:
                for _ in self.iterate(2):
                    pass
            except OSError as e:  # a damaged leaf: search by name, as before
                log.warning("btrfs directory %d: %s; looking names up one by one", self.ino, e)
            if self._names is not None:
                return self.lookup(name)
        key = (self.ino, DIR_ITEM_KEY, name_hash(name))
        data = self.tree.get(key)
        if data is None:
            return None
        where = f"btrfs directory {self.ino} item {key[2]}"
        for loc, _ft, n, _v in _entries(data, where):
            if n == name:
                return self.sb.inode_at(self.subvol, loc, where)
        return None

    def iterate(self, pos: int) -> Iterator[tuple[bytes, int, int, int]]:
        if not self.is_dir:
            raise kerr(errno.ENOTDIR)
        if pos <= 0:
            yield b".", self.ino, DT_DIR, 1
        if pos <= 1:
            yield b"..", self.parent_ino(), DT_DIR, 2
        if self.subvol.tree is None:
            return
        start = max(pos, 2)
        where = f"btrfs directory {self.ino}"
        seen = None
        if self._names is None:
            if start == 2:
                seen = {}
            elif self._seen is not None and start <= self._seen[1]:
                seen = self._seen[0]  # getdents goes on where the last call stopped
        for (_oid, _t, idx), data in self.tree.items((self.ino, DIR_INDEX_KEY, start),
                                                      (self.ino, DIR_INDEX_KEY + 1, 0)):
            for loc, ft, name, _v in _entries(data, where):
                if len(name) > _MAX_NAME or SLASH in name or NUL in name:
                    raise corrupted(where, f"invalid name {name!r}")
                ino = 256 if loc[1] == ROOT_ITEM_KEY else loc[0]
                if seen is not None:
                    seen[name] = loc
                    self._seen = (seen, idx + 1)
                yield name, ino, _FT_TO_DT[ft] if ft < 8 else DT_UNKNOWN, idx + 1
        if seen is not None and (self._seen is None or self._seen[0] is seen):
            self._names = seen  # read to the end: every name is here
            self._seen = None

    def parent_ino(self) -> int:
        tree = self.subvol.tree
        if tree is None:
            return self.ino
        hit = tree.first((self.ino, INODE_REF_KEY, 0), (self.ino, INODE_REF_KEY + 1, 0))
        if hit is not None:
            return hit[0][2]
        return self.ino

    # -- data ------------------------------------------------------------------------------
    def _file_extents(self) -> list[tuple[int, int, int, memoryview]]:
        """(file offset, length in the file, type, item) of every extent, sorted."""
        exts = self._extents
        if exts is None:
            exts = []
            where = f"btrfs inode {self.ino} extent"
            first = self._first.extents if self._first is not None else None
            if first is None:
                first = [(off, data) for (_o, _t, off), data in self.tree.items(
                    (self.ino, EXTENT_DATA_KEY, 0), (self.ino, EXTENT_DATA_KEY + 1, 0))]
            for off, data in first:
                if len(data) < FILE_EXTENT.size:
                    raise corrupted(where, f"item at {off} truncated")
                _g, ram, _c, _e, _o2, typ = FILE_EXTENT.unpack_from(data, 0)
                if typ == FILE_EXTENT_INLINE:
                    length = ram
                elif typ in (FILE_EXTENT_REG, FILE_EXTENT_PREALLOC):
                    if len(data) < FILE_EXTENT.size + 32:
                        raise corrupted(where, f"item at {off} truncated")
                    length = int.from_bytes(data[FILE_EXTENT.size + 24:FILE_EXTENT.size + 32],
                                            "little")
                else:
                    raise corrupted(where, f"unknown extent type {typ}")
                exts.append((off, length, typ, data))
            self._extents = exts
        return exts

    def extents(self, start: int, end: int) -> Iterator[Extent]:
        bs = self.sb.blocksize
        for off, length, typ, data in self._file_extents():
            if typ != FILE_EXTENT_INLINE and \
                    int.from_bytes(data[FILE_EXTENT.size:FILE_EXTENT.size + 8], "little") == 0:
                continue  # a hole written out (no NO_HOLES)
            first, last = off // bs, (off + length + bs - 1) // bs
            if last <= start or first >= end:
                continue
            yield Extent(first, last - first, 0, typ == FILE_EXTENT_PREALLOC)

    def read(self, offset: int, size: int) -> bytes:
        size = min(size, self.size - offset)
        if size <= 0:
            return b""
        out = bytearray(size)
        end = offset + size
        for off, length, typ, data in self._file_extents():
            if off >= end or off + length <= offset:
                continue
            lo, hi = max(off, offset), min(off + length, end)
            if typ == FILE_EXTENT_PREALLOC:
                continue
            chunk = self._extent_bytes(off, typ, data, lo - off, hi - lo)
            out[lo - offset:lo - offset + len(chunk)] = chunk
        return bytes(out)

    def read_into(self, offset: int, dest: memoryview) -> int:
        size = min(len(dest), self.size - offset)
        if size <= 0:
            return 0
        end = offset + size
        pos = offset  # everything before pos is filled
        for off, length, typ, data in self._file_extents():
            if off >= end or off + length <= offset:
                continue
            lo, hi = max(off, offset), min(off + length, end)
            zero_fill(dest, pos - offset, lo - offset)  # a hole before the extent
            if typ == FILE_EXTENT_PREALLOC:
                zero_fill(dest, lo - offset, hi - offset)
            else:
                chunk = self._extent_bytes(off, typ, data, lo - off, hi - lo)
                dest[lo - offset:lo - offset + len(chunk)] = chunk
                zero_fill(dest, lo - offset + len(chunk), hi - offset)
            pos = max(pos, hi)
        zero_fill(dest, pos - offset, size)
        return size

    def _extent_bytes(self, off: int, typ: int, data: memoryview, skip: int, n: int) -> bytes:
        """``n`` bytes from ``skip`` into the extent at file offset ``off``."""
        where = f"btrfs inode {self.ino} extent at {off}"
        _g, ram, comp, enc, _o, _t = FILE_EXTENT.unpack_from(data, 0)
        if enc:
            raise kerr(errno.EOPNOTSUPP, where, "encrypted extents are not supported")
        if typ == FILE_EXTENT_INLINE:
            payload = bytes(data[FILE_EXTENT.size:])
            if comp != COMPRESS_NONE:
                payload = decompress(comp, payload, ram, where)
            return payload[skip:skip + n].ljust(min(n, max(ram - skip, 0)), b"\0")
        disk, disk_len, ext_off, _num = FILE_EXTENT_DISK.unpack_from(data, FILE_EXTENT.size)
        if disk == 0:
            return bytes(n)
        if comp == COMPRESS_NONE:
            return self.sb.read_data(disk + ext_off + skip, n, not self.flags & INODE_NODATASUM,
                                     where)
        raw = self.sb.read_data(disk, disk_len, not self.flags & INODE_NODATASUM, where)
        full = decompress(comp, raw, ram, where)
        return full[ext_off + skip:ext_off + skip + n]

    def readlink(self) -> bytes:
        if not self.is_lnk:
            raise kerr(errno.EINVAL)
        return self.read(0, self.size)

    # -- xattrs -------------------------------------------------------------------------------
    def _xattrs(self) -> list[tuple[bytes, bytes]]:
        if self.subvol.tree is None:
            return []
        out = []
        where = f"btrfs inode {self.ino} xattr"
        items = self._first.xattrs if self._first is not None else None
        if items is None:
            items = [data for _k, data in self.tree.items((self.ino, XATTR_ITEM_KEY, 0),
                                                          (self.ino, XATTR_ITEM_KEY + 1, 0))]
        for data in items:
            for _loc, _ft, name, value in _entries(data, where):
                out.append((name, value))
        return out

    def listxattr(self) -> list[bytes]:
        return [n for n, _v in self._xattrs()]

    def getxattr(self, name: bytes) -> bytes:
        if self.subvol.tree is not None:
            data = self.tree.get((self.ino, XATTR_ITEM_KEY, name_hash(name)))
            if data is not None:
                for _loc, _ft, n, value in _entries(data, f"btrfs inode {self.ino} xattr"):
                    if n == name:
                        return value
        raise kerr(errno.ENODATA, name)

