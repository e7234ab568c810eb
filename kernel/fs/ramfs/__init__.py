"""ramfs: the in-memory root filesystem where /dev and /mnt live, as in LKL.

Every inode lives in memory; file data is a ``bytearray``. It supports every
file type and extended attributes of every namespace (as tmpfs does), so the
VFS can be exercised against the host kernel without a disk.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Iterator

from ...errors import kerr
from ...uapi import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    IFTODT,
    S_IFDIR,
    S_IFLNK,
    S_IFMT,
    XATTR_CREATE,
    XATTR_REPLACE,
)
from ...vfs.inode import FileSystemType, Inode, NewInode, SetAttr, StatFs, SuperBlock

RAMFS_MAGIC = 0x858458F6
_DOT_COOKIES = 2  # "." is cookie 1, ".." cookie 2


class RamInode(Inode):
    __slots__ = ("data", "entries", "parent", "target", "xattrs", "_next_cookie")

    def __init__(self, sb: RamSuper, ino: int, spec: NewInode, parent: RamInode | None) -> None:
        super().__init__(sb, ino)
        self.mode = spec.mode
        self.uid = spec.uid
        self.gid = spec.gid
        self.rdev = spec.rdev
        now = sb.now()
        self.atime_ns = self.mtime_ns = self.ctime_ns = now
        self.btime_ns = now
        self.generation = 0
        self.data = bytearray()
        self.entries: dict[bytes, tuple[int, RamInode]] = {}
        self.parent = parent or self
        self.target = spec.target
        self.xattrs: dict[bytes, bytes] = dict(spec.xattrs)
        self._next_cookie = _DOT_COOKIES + 1
        if self.mode & S_IFMT == S_IFDIR:
            self.nlink = 2
        else:
            self.nlink = 1
        if self.mode & S_IFMT == S_IFLNK:
            self.size = len(spec.target)

    # -- directories ---------------------------------------------------------
    def lookup(self, name: bytes) -> Inode | None:
        if not self.is_dir:
            raise kerr(errno.ENOTDIR)
        e = self.entries.get(name)
        return e[1] if e else None

    def iterate(self, pos: int) -> Iterator[tuple[bytes, int, int, int]]:
        if pos < 1:
            yield b".", self.ino, IFTODT(S_IFDIR), 1
        if pos < 2:
            yield b"..", self.parent.ino, IFTODT(S_IFDIR), 2
        for name, (cookie, inode) in list(self.entries.items()):
            if cookie > pos and self.entries.get(name, (0,))[0] == cookie:
                yield name, inode.ino, IFTODT(inode.mode), cookie

    def _add(self, name: bytes, inode: RamInode) -> None:
        self.entries[name] = (self._next_cookie, inode)
        self._next_cookie += 1
        self.size = len(self.entries)

    def _remove(self, name: bytes) -> None:
        del self.entries[name]
        self.size = len(self.entries)

    def create(self, name: bytes, spec: NewInode) -> Inode:
        sb: RamSuper = self.sb  # type: ignore[assignment]
        inode = RamInode(sb, next(sb.inos), spec, self)
        sb.remember(inode)
        self._add(name, inode)
        if inode.is_dir:
            self.nlink += 1
        return inode

    def link(self, name: bytes, inode: Inode) -> None:
        self._add(name, inode)  # type: ignore[arg-type]
        inode.nlink += 1

    def unlink(self, name: bytes, inode: Inode) -> None:
        self._remove(name)
        inode.nlink -= 1

    def rmdir(self, name: bytes, inode: Inode) -> None:
        if inode.entries:  # type: ignore[attr-defined]
            raise kerr(errno.ENOTEMPTY)
        self._remove(name)
        inode.nlink = 0
        self.nlink -= 1

    def rename(self, old_name: bytes, inode: Inode, new_dir: Inode, new_name: bytes,
               target: Inode | None, flags: int) -> None:
        from ...uapi import RENAME_EXCHANGE

        nd: RamInode = new_dir  # type: ignore[assignment]
        moved: RamInode = inode  # type: ignore[assignment]
        if flags & RENAME_EXCHANGE:
            assert target is not None
            tgt: RamInode = target  # type: ignore[assignment]
            self.entries[old_name] = (self.entries[old_name][0], tgt)
            nd.entries[new_name] = (nd.entries[new_name][0], moved)
            if moved.is_dir != tgt.is_dir and self is not nd:
                if moved.is_dir:
                    self.nlink -= 1
                    nd.nlink += 1
                else:
                    nd.nlink -= 1
                    self.nlink += 1
            moved.parent, tgt.parent = nd, self
            return
        if target is not None:
            if target.is_dir:
                if target.entries:  # type: ignore[attr-defined]
                    raise kerr(errno.ENOTEMPTY)
                target.nlink = 0
                nd.nlink -= 1
            else:
                target.nlink -= 1
            nd._remove(new_name)
        self._remove(old_name)
        nd._add(new_name, moved)
        if moved.is_dir:
            self.nlink -= 1
            nd.nlink += 1
            moved.parent = nd

    # -- attributes ----------------------------------------------------------------
    def setattr(self, attr: SetAttr) -> None:
        if attr.size is not None:
            if attr.size < len(self.data):
                del self.data[attr.size:]
            else:
                self.data.extend(bytes(attr.size - len(self.data)))
            self.size = attr.size
            self.blocks = (len(self.data) + 511) // 512
        attr.apply_to(self)

    def readlink(self) -> bytes:
        if not self.is_lnk:
            raise kerr(errno.EINVAL)
        return self.target

    # -- data ------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset:offset + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        end = offset + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data
        if end > self.size:
            self.size = end
        self.blocks = (len(self.data) + 511) // 512
        return len(data)

    def fallocate(self, mode: int, offset: int, length: int) -> None:
        end = offset + length
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            stop = min(end, len(self.data))
            if stop > offset:
                self.data[offset:stop] = bytes(stop - offset)
            if mode & FALLOC_FL_PUNCH_HOLE:
                return
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
            self.blocks = (len(self.data) + 511) // 512
        if not mode & FALLOC_FL_KEEP_SIZE and end > self.size:
            self.size = end

    def fsync(self, datasync: bool) -> None:
        pass

    # -- xattrs ----------------------------------------------------------------------------
    def listxattr(self) -> list[bytes]:
        return list(self.xattrs)

    def getxattr(self, name: bytes) -> bytes:
        try:
            return self.xattrs[name]
        except KeyError:
            raise kerr(errno.ENODATA, name) from None

    def setxattr(self, name: bytes, value: bytes, flags: int) -> None:
        exists = name in self.xattrs
        if flags & XATTR_CREATE and exists:
            raise kerr(errno.EEXIST, name)
        if flags & XATTR_REPLACE and not exists:
            raise kerr(errno.ENODATA, name)
        self.xattrs[name] = bytes(value)

    def removexattr(self, name: bytes) -> None:
        if self.xattrs.pop(name, None) is None:
            raise kerr(errno.ENODATA, name)

    def mark_dirty(self) -> None:
        pass

    def evict(self) -> None:
        self.data = bytearray()


class RamSuper(SuperBlock):
    fstype = "ramfs"
    magic = RAMFS_MAGIC

    def __init__(self, kernel: object, flags: int) -> None:
        super().__init__(kernel, None, flags)
        self.inos = itertools.count(1)
        self.blocksize = 4096
        self.dev = kernel.anon_dev()  # type: ignore[attr-defined]
        self.root = self.remember(RamInode(self, next(self.inos), NewInode(S_IFDIR | 0o755, 0, 0),
                                           None))

    def statfs(self) -> StatFs:
        return StatFs(RAMFS_MAGIC, 4096, 0, 0, 0, 0, 0)


class RamfsType(FileSystemType):
    name = "ramfs"
    requires_dev = False

    def mount(self, kernel: object, bdev: object, flags: int, options: str) -> SuperBlock:
        return RamSuper(kernel, flags)


def register(registry: object) -> None:
    registry.register(RamfsType())  # type: ignore[attr-defined]
