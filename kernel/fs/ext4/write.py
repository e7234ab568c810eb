"""Inode-level changes on a read-write mount (fs/ext4/ialloc.c, inode.c, namei.c).

``store_inode`` encodes an in-memory inode into its on-disk slot (times
with their epoch and nanosecond bits, 32-bit ids, 48-bit block counts, the
checksum). The namespace operations allocate before they link, so a failure
(ENOSPC) leaves nothing half done: a new inode whose entry cannot be added is
freed again.
"""

from __future__ import annotations

import errno
import random
import struct
from typing import TYPE_CHECKING

from ...errors import kerr
from ...uapi import (
    RENAME_EXCHANGE,
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    major,
    minor,
)
from ...vfs.inode import NewInode, SetAttr
from . import dirwrite as dw
from . import file as fmod
from . import xattr as xa
from .csum import inode_csum
from .extents import empty_root
from .ondisk import (
    EXT4_EXTENTS_FL,
    EXT4_GOOD_OLD_INODE_SIZE,
    EXT4_HUGE_FILE_FL,
    EXT4_INDEX_FL,
    EXT4_N_BLOCKS,
    EXT4_ROOT_INO,
    EXT4_TOPDIR_FL,
    INCOMPAT_EXTENTS,
    INODE_BASE,
    RO_COMPAT_LARGE_FILE,
)

if TYPE_CHECKING:
    from .inode import Ext4Inode

_NS = 1_000_000_000
_EXTRA_TIMES = struct.Struct("<III")  # ctime, mtime, atime extra at 0x84
_CRTIME = struct.Struct("<iI")  # crtime, crtime_extra at 0x90
# flags a new inode inherits from its directory (EXT4_FL_INHERITED, minus encryption/casefold)
_INHERITED = 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 \
    | 0x00000040 | 0x00000080 | 0x00004000 | 0x00008000 | 0x00020000 | 0x20000000
_LINK_MAX = 65000
# i_generation of new inodes: random, as Linux's prandom_u32 (seeded from os.urandom; a
# getrandom system call per inode cost more than the rest of the field's setup)
_generations = random.Random()


# store_inode's pieces of the base inode (INODE_BASE): i_mode .. i_flags; i_block ..
# i_size_high; l_i_blocks_high .. l_i_checksum_lo
_BASE_TO_FLAGS = struct.Struct("<HHIiiiIHHII")
_BASE_BLOCK_TO_SIZE = struct.Struct("<60sIII")
_BASE_HIGHS = struct.Struct("<HHHHH")


def _enc_time(ns: int, extra_ok: bool) -> tuple[int, int]:
    """(signed 32-bit seconds, extra word: epoch bits and nanoseconds << 2)."""
    sec, nsec = divmod(ns, _NS)
    if extra_ok and -0x80000000 <= sec <= 0x7FFFFFFF:  # 1901-2038: epoch bits 0
        return sec, nsec << 2
    if not extra_ok:
        sec = max(min(sec, 0x7FFFFFFF), -0x80000000)
        return sec, 0
    sec = max(min(sec, 0x3_7FFF_FFFF), -0x80000000)
    lo = (sec + 0x80000000) % (1 << 32) - 0x80000000
    epoch = ((sec - lo) >> 32) & 3
    return lo, epoch | nsec << 2


def store_inode(inode: Ext4Inode) -> None:
    """Encode ``inode`` into its slot in the inode table (checksummed, buffer dirty)."""
    sb = inode.sb
    fmod.store_map(inode)
    raw = bytearray(inode.raw)
    extra = inode.extra_isize
    big = len(raw) > EXT4_GOOD_OLD_INODE_SIZE
    has = big and extra >= 4
    at, atx = _enc_time(inode.atime_ns, big and extra >= 16)
    ct, ctx = _enc_time(inode.ctime_ns, big and extra >= 8)
    mt, mtx = _enc_time(inode.mtime_ns, big and extra >= 12)
    blocks = inode.blocks
    flags = inode.i_flags & ~EXT4_HUGE_FILE_FL
    if blocks >= 1 << 32 and not sb.huge_file:
        raise kerr(errno.EFBIG, f"ext4 inode {inode.ino}", "too many blocks without huge_file")
    if blocks >= 1 << 48:
        flags |= EXT4_HUGE_FILE_FL
        blocks //= sb.blocksize >> 9
    size = inode.size
    if size >= 1 << 31 and not sb.ro_compat & RO_COMPAT_LARGE_FILE:
        sb.ro_compat |= RO_COMPAT_LARGE_FILE  # stored with the superblock
    # i_dtime: the deletion time of a freed inode, else the next inode of the orphan list
    dtime = inode.dtime or inode.orphan_next
    # every field of the base inode but those we never change (i_version, i_faddr and the
    # reserved word stay as they are), in three runs; the checksum is filled in below
    _BASE_TO_FLAGS.pack_into(
        raw, 0, inode.mode & 0xFFFF, inode.uid & 0xFFFF, size & 0xFFFFFFFF, at, ct, mt, dtime,
        inode.gid & 0xFFFF, min(inode.nlink, 0xFFFF), blocks & 0xFFFFFFFF, flags)
    _BASE_BLOCK_TO_SIZE.pack_into(raw, 0x28, inode.i_block, inode.generation,
                                  inode.file_acl & 0xFFFFFFFF, size >> 32)
    _BASE_HIGHS.pack_into(raw, 0x74, (blocks >> 32) & 0xFFFF, inode.file_acl >> 32,
                          inode.uid >> 16, inode.gid >> 16, 0)
    if big and extra >= 16:
        _EXTRA_TIMES.pack_into(raw, 0x84, ctx, mtx, atx)
    elif big and extra >= 8:
        struct.pack_into("<I", raw, 0x84, ctx)
        if extra >= 12:
            struct.pack_into("<I", raw, 0x88, mtx)
    if big and extra >= 24 and inode.btime_ns is not None:
        bt, btx = _enc_time(inode.btime_ns, True)
        _CRTIME.pack_into(raw, 0x90, bt, btx)
    if sb.metadata_csum:
        if has:
            struct.pack_into("<H", raw, 0x82, 0)
        c = inode_csum(inode.csum_seed, raw, has)
        struct.pack_into("<H", raw, 0x7C, c & 0xFFFF)
        if has:
            struct.pack_into("<H", raw, 0x82, c >> 16)
    inode.raw = bytes(raw)
    sb.write_inode_raw(inode.ino, inode.raw)


# -- creating -------------------------------------------------------------------------------------
def _encode_rdev(rdev: int) -> bytes:
    ma, mi = major(rdev), minor(rdev)
    if ma < 256 and mi < 256:
        return struct.pack("<I", ma << 8 | mi).ljust(60, b"\0")
    return struct.pack("<II", 0, (mi & 0xFF) | (ma << 8) | ((mi & ~0xFF) << 12)).ljust(60, b"\0")


def new_inode(dir_: Ext4Inode, spec: NewInode) -> Ext4Inode:
    """Allocate and initialise an inode (not yet linked anywhere)."""
    sb = dir_.sb
    ftype = spec.mode & S_IFMT
    is_dir = ftype == S_IFDIR
    topdir = is_dir and (dir_.ino == EXT4_ROOT_INO or bool(dir_.i_flags & EXT4_TOPDIR_FL))
    ino = sb.alloc.alloc_inode(dir_.ino, is_dir, topdir)
    isize = sb.inode_size
    raw = bytearray(isize)
    extra = 0
    if isize > EXT4_GOOD_OLD_INODE_SIZE:
        extra = max(sb.es.s_want_extra_isize, sb.es.s_min_extra_isize, 32)
        extra = min(extra, isize - EXT4_GOOD_OLD_INODE_SIZE) & ~3
        struct.pack_into("<H", raw, 0x80, extra)
    gen = _generations.getrandbits(32)
    flags = dir_.i_flags & _INHERITED
    if ftype not in (S_IFDIR, S_IFREG):
        flags &= ~(0x00004000 | 0x00020000 | 0x00000040)  # no journal-data/topdir/notail
    use_extents = sb.incompat & INCOMPAT_EXTENTS
    i_block = bytes(60)
    if ftype in (S_IFREG, S_IFDIR) and use_extents:
        flags |= EXT4_EXTENTS_FL
        i_block = empty_root()
    elif ftype in (S_IFCHR, S_IFBLK):
        i_block = _encode_rdev(spec.rdev)
    now = sb.now()
    INODE_BASE.pack_into(raw, 0, spec.mode & 0xFFFF, spec.uid & 0xFFFF, 0, 0, 0, 0, 0,
                         spec.gid & 0xFFFF, 1, 0, flags, 0, i_block, gen, 0, 0, 0, 0, 0,
                         spec.uid >> 16, spec.gid >> 16, 0, 0)
    # an Ext4Inode (whose module imports this one)
    inode = type(dir_).fresh(sb, ino, bytes(raw), spec.mode & 0xFFFF, spec.uid, spec.gid, flags,
                             i_block, gen, extra, now)
    inode.rdev = spec.rdev if ftype in (S_IFCHR, S_IFBLK) else 0
    inode.nlink = 2 if is_dir else 1
    inode.tblocks = []
    inode.map_lo, inode.map_hi = 1 << 62, 0
    inode._runs = []
    inode._starts = []
    sb.remember(inode)
    sb.dirty_inode(inode)
    try:
        if is_dir:
            fmod.allocate(inode, 0, 1, False)
            pblk = inode.bmap(0)
            buf = sb.bcache.getblk(sb.io, pblk, sb.blocksize)
            data = bytearray(sb.blocksize)
            dw.init_dir_block(inode, data, dir_.ino)
            buf.data[:] = data
            dw._finish_leaf(inode, buf)
            inode.size = sb.blocksize
        elif ftype == S_IFLNK:
            target = spec.target
            if len(target) < EXT4_N_BLOCKS * 4:
                inode.i_block = target.ljust(60, b"\0")
                inode.size = len(target)
            else:
                if use_extents:
                    inode.i_flags |= EXT4_EXTENTS_FL
                    inode.i_block = empty_root()
                fmod.write(inode, 0, target)
        if spec.xattrs:
            items = []
            for name, value in spec.xattrs:
                key = xa.split_name(name)
                if key is None:
                    continue
                if name.startswith(b"system.posix_acl_"):
                    from .acl import acl_to_disk

                    value = acl_to_disk(value)
                items.append((key[0], key[1], value))
            xa.store_xattrs(inode, items)
    except BaseException:
        _destroy(inode)
        raise
    return inode


def _destroy(inode: Ext4Inode) -> None:
    """Free an inode and everything it holds (it has no links left)."""
    sb = inode.sb
    was_dir = inode.is_dir
    if inode.is_reg or inode.is_dir or (inode.is_lnk and not inode.is_fast_symlink()):
        fmod.punch(inode, 0, max(fmod.map_end(inode), 1))
    if inode.file_acl:
        xa.release_block(inode, inode.file_acl)
        inode.file_acl = 0
    fmod.store_map(inode)
    if inode.tblocks:
        for b in inode.tblocks:
            sb.alloc.free_blocks(b, 1)
        inode.tblocks = []
    inode.nlink = 0
    inode.size = 0
    inode.blocks = 0
    inode.dtime = max(sb.now() // _NS, 1)
    inode.i_flags &= ~EXT4_INDEX_FL
    if inode.i_flags & EXT4_EXTENTS_FL:
        inode.i_block = empty_root()
    else:
        inode.i_block = bytes(60)
    inode.map_lo, inode.map_hi = 1 << 62, 0
    store_inode(inode)
    sb.forget_dirty(inode)
    sb.alloc.free_inode(inode.ino, was_dir)


def create(dir_: Ext4Inode, name: bytes, spec: NewInode) -> Ext4Inode:
    sb = dir_.sb
    is_dir = spec.mode & S_IFMT == S_IFDIR
    inode = new_inode(dir_, spec)
    try:
        dw.add_entry(dir_, name, inode.ino, inode.mode)
    except BaseException:
        inode.nlink = 0
        _destroy(inode)
        raise
    if is_dir:
        _inc_dir_links(dir_)
    dir_.mtime_ns = dir_.ctime_ns = inode.ctime_ns
    sb.dirty_inode(dir_)
    return inode


def _inc_dir_links(d: Ext4Inode) -> None:
    # dir_nlink: past the limit a directory's count sticks at 1 ("many")
    if d.nlink == 1 and d.sb.dir_nlink:
        return
    d.nlink += 1
    if d.nlink >= _LINK_MAX and d.sb.dir_nlink:
        d.nlink = 1
    d.sb.dirty_inode(d)


def _dec_dir_links(d: Ext4Inode) -> None:
    if d.nlink == 1 and d.sb.dir_nlink:
        return
    if d.nlink > 2:
        d.nlink -= 1
    d.sb.dirty_inode(d)


def link(dir_: Ext4Inode, name: bytes, inode: Ext4Inode) -> None:
    dw.add_entry(dir_, name, inode.ino, inode.mode)
    inode.nlink += 1
    dir_.sb.dirty_inode(inode)


def unlink(dir_: Ext4Inode, name: bytes, inode: Ext4Inode) -> None:
    dw.delete_entry(dir_, name)
    _drop_link(inode)


def _drop_link(inode: Ext4Inode) -> None:
    inode.nlink = max(inode.nlink - 1, 0)
    sb = inode.sb
    if inode.nlink == 0:
        sb.orphan_add(inode)
    sb.dirty_inode(inode)


def rmdir(dir_: Ext4Inode, name: bytes, inode: Ext4Inode) -> None:
    if not dw.is_empty(inode):
        raise kerr(errno.ENOTEMPTY, name)
    dw.delete_entry(dir_, name)
    inode.nlink = 0
    inode.sb.orphan_add(inode)
    inode.sb.dirty_inode(inode)
    _dec_dir_links(dir_)


def rename(old_dir: Ext4Inode, old_name: bytes, inode: Ext4Inode, new_dir: Ext4Inode,
           new_name: bytes, target: Ext4Inode | None, flags: int) -> None:
    sb = old_dir.sb
    if flags & RENAME_EXCHANGE:
        assert target is not None
        dw.set_entry(old_dir, old_name, target.ino, target.mode)
        dw.set_entry(new_dir, new_name, inode.ino, inode.mode)
        if old_dir is not new_dir:
            if inode.is_dir:
                dw.set_entry(inode, b"..", new_dir.ino, S_IFDIR)
            if target.is_dir:
                dw.set_entry(target, b"..", old_dir.ino, S_IFDIR)
            if inode.is_dir != target.is_dir:
                if inode.is_dir:
                    _dec_dir_links(old_dir)
                    _inc_dir_links(new_dir)
                else:
                    _dec_dir_links(new_dir)
                    _inc_dir_links(old_dir)
        return
    if target is not None:
        if target.is_dir and not dw.is_empty(target):
            raise kerr(errno.ENOTEMPTY, new_name)
        dw.set_entry(new_dir, new_name, inode.ino, inode.mode)
        if target.is_dir:
            target.nlink = 0
            sb.orphan_add(target)
            sb.dirty_inode(target)
            _dec_dir_links(new_dir)
        else:
            _drop_link(target)
    else:
        dw.add_entry(new_dir, new_name, inode.ino, inode.mode)
    dw.delete_entry(old_dir, old_name)
    if inode.is_dir and old_dir is not new_dir:
        dw.set_entry(inode, b"..", new_dir.ino, S_IFDIR)
        _dec_dir_links(old_dir)
        _inc_dir_links(new_dir)


def set_attr(inode: Ext4Inode, attr: SetAttr) -> None:
    sb = inode.sb
    if attr.size is not None and attr.size != inode.size:
        limit = sb.maxbytes if inode.i_flags & EXT4_EXTENTS_FL else sb.maxbytes_indirect
        if attr.size > limit:
            raise kerr(errno.EFBIG)
        fmod.truncate(inode, attr.size)
    attr.apply_to(inode)
    sb.dirty_inode(inode)


def evict(inode: Ext4Inode) -> None:
    """The last reference to an unlinked inode is gone: free it."""
    sb = inode.sb
    if inode.nlink or inode.dtime:
        return
    sb.orphan_del(inode)
    _destroy(inode)
