"""Extended attributes (fs/ext4/xattr.c, read side).

An inode's attributes live in two places: the space after the large inode's
extra fields (the "ibody", a magic word then entries whose values are
addressed from the first entry) and one attribute block named by
``i_file_acl`` (a 32-byte header, entries from offset 32, values addressed
from the block start), which identical inodes share (``h_refcount``). A
value may instead live in its own inode (ea_inode: ``e_value_inum``).
Every entry and value is bounds-checked; the block's checksum is verified.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ...errors import EFSBADCRC, corrupted, kerr
from ...uapi import XATTR_NAME_POSIX_ACL_ACCESS, XATTR_NAME_POSIX_ACL_DEFAULT
from .acl import acl_from_disk
from .csum import xattr_block_csum
from .ondisk import (
    EXT4_EA_INODE_FL,
    EXT4_GOOD_OLD_INODE_SIZE,
    EXT4_XATTR_INDEX_POSIX_ACL_ACCESS,
    EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT,
    EXT4_XATTR_INDEX_SECURITY,
    EXT4_XATTR_INDEX_SYSTEM,
    EXT4_XATTR_INDEX_TRUSTED,
    EXT4_XATTR_INDEX_USER,
    EXT4_XATTR_MAGIC,
)

if TYPE_CHECKING:
    from .inode import Ext4Inode

_ENTRY = struct.Struct("<BBHIII")
_U32 = struct.Struct("<I")
_HDR = struct.Struct("<IIIII")

# name index -> prefix; the ACL indexes carry the whole name
PREFIXES = {
    EXT4_XATTR_INDEX_USER: b"user.",
    EXT4_XATTR_INDEX_POSIX_ACL_ACCESS: XATTR_NAME_POSIX_ACL_ACCESS,
    EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT: XATTR_NAME_POSIX_ACL_DEFAULT,
    EXT4_XATTR_INDEX_TRUSTED: b"trusted.",
    EXT4_XATTR_INDEX_SECURITY: b"security.",
    EXT4_XATTR_INDEX_SYSTEM: b"system.",
}
# what listxattr shows (Linux has no handler listing system.data and friends)
LISTED = (EXT4_XATTR_INDEX_USER, EXT4_XATTR_INDEX_POSIX_ACL_ACCESS,
          EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT, EXT4_XATTR_INDEX_TRUSTED, EXT4_XATTR_INDEX_SECURITY)
_ACL_INDEXES = (EXT4_XATTR_INDEX_POSIX_ACL_ACCESS, EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT)

# (name index, name suffix, inline value or None, value inode, value size)
Entry = tuple[int, bytes, bytes | None, int, int]
_BLOCK_OK = 2  # Buffer.private flag: xattr block verified


def _parse_entries(data: bytes, start: int, end: int, value_base: int, value_end: int,
                   what: str) -> list[Entry]:
    """Entries from ``start`` up to the 4-zero-byte terminator, all within ``end``."""
    out: list[Entry] = []
    pos = start
    min_value = value_end
    while True:
        if pos + 4 > end:
            raise corrupted(what, "xattr entries run past their area")
        if _U32.unpack_from(data, pos)[0] == 0:
            break
        if pos + 16 > end:
            raise corrupted(what, "xattr entry truncated")
        name_len, index, voff, vinum, vsize, _hash = _ENTRY.unpack_from(data, pos)
        nend = pos + 16 + name_len
        if nend > end:
            raise corrupted(what, f"xattr entry at {pos} has a bad name length {name_len}")
        name = data[pos + 16:nend]
        if vinum:
            value = None
        else:
            vstart = value_base + voff
            if vsize and (vstart < pos or vstart + vsize > value_end or voff & 3):
                raise corrupted(what, f"xattr value of {name!r} out of bounds")
            if vsize:
                min_value = min(min_value, vstart)
            value = data[vstart:vstart + vsize]
        out.append((index, name, value, vinum, vsize))
        pos = (nend + 3) & ~3
        if len(out) > (end - start) // 16:
            raise corrupted(what, "too many xattr entries")
    if pos + 4 > min_value:
        raise corrupted(what, "xattr values overlap the entries")
    return out


def ibody_entries(inode: Ext4Inode) -> list[Entry]:
    """Attributes stored in the inode body (empty for 128-byte inodes)."""
    raw = inode.raw
    start = EXT4_GOOD_OLD_INODE_SIZE + inode.extra_isize
    if len(raw) <= start + 4 or _U32.unpack_from(raw, start)[0] != EXT4_XATTR_MAGIC:
        return []
    first = start + 4
    return _parse_entries(raw, first, len(raw), first, len(raw), f"ext4 inode {inode.ino} xattrs")


def block_entries(inode: Ext4Inode) -> list[Entry]:
    """Attributes in the inode's xattr block (``i_file_acl``), verified."""
    blk = inode.file_acl
    if not blk:
        return []
    sb = inode.sb
    what = f"ext4 xattr block {blk} (inode {inode.ino})"
    if not sb.first_data_block <= blk < sb.blocks_count:
        raise corrupted(f"ext4 inode {inode.ino}", f"invalid xattr block {blk}")
    buf = sb.bread(blk)
    data = bytes(buf.data)
    magic, _refcount, nblocks, _hash, csum = _HDR.unpack_from(data, 0)
    if magic != EXT4_XATTR_MAGIC or nblocks != 1:
        raise corrupted(what, f"bad header (magic {magic:#x}, blocks {nblocks})")
    if sb.metadata_csum and buf.private != _BLOCK_OK:
        if csum != xattr_block_csum(sb.csum_seed, blk, data):
            raise corrupted(what, "checksum mismatch", EFSBADCRC)
        buf.private = _BLOCK_OK
    return _parse_entries(data, 32, len(data), 0, len(data), what)


def all_entries(inode: Ext4Inode) -> list[Entry]:
    return ibody_entries(inode) + block_entries(inode)


def full_name(index: int, name: bytes) -> bytes | None:
    prefix = PREFIXES.get(index)
    if prefix is None:
        return None
    if index in _ACL_INDEXES:
        return prefix
    return prefix + name


def split_name(name: bytes) -> tuple[int, bytes] | None:
    """(index, suffix) of a full attribute name, or None if ext4 cannot store it."""
    if name == XATTR_NAME_POSIX_ACL_ACCESS:
        return EXT4_XATTR_INDEX_POSIX_ACL_ACCESS, b""
    if name == XATTR_NAME_POSIX_ACL_DEFAULT:
        return EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT, b""
    for index in (EXT4_XATTR_INDEX_USER, EXT4_XATTR_INDEX_TRUSTED, EXT4_XATTR_INDEX_SECURITY,
                  EXT4_XATTR_INDEX_SYSTEM):
        prefix = PREFIXES[index]
        if name.startswith(prefix):
            return index, name[len(prefix):]
    return None


def list_names(entries: list[Entry]) -> list[bytes]:
    out = []
    for index, name, _v, _i, _s in entries:
        if index in LISTED:
            fn = full_name(index, name)
            if fn is not None:
                out.append(fn)
    return out


def entry_value(inode: Ext4Inode, e: Entry) -> bytes:
    """The raw stored value of an entry, reading its ea_inode if it has one."""
    index, name, value, vinum, vsize = e
    if value is not None:
        return value
    sb = inode.sb
    what = f"ext4 inode {inode.ino} xattr {name!r}"
    if not sb.ea_inode_feature:
        raise corrupted(what, "value in an inode without the ea_inode feature")
    ea = sb.get_inode(vinum)
    if not ea.i_flags & EXT4_EA_INODE_FL or ea.size != vsize:
        raise corrupted(what, f"bad value inode {vinum}")
    return ea.read(0, vsize)


def get_value(inode: Ext4Inode, entries: list[Entry], name: bytes) -> bytes:
    """The value of ``name`` in VFS form (ACLs converted); ENODATA if absent."""
    key = split_name(name)
    if key is None:
        raise kerr(errno.ENODATA, name)
    index, suffix = key
    for e in entries:
        if e[0] == index and e[1] == suffix:
            value = entry_value(inode, e)
            if index in _ACL_INDEXES:
                return acl_from_disk(value, f"ext4 inode {inode.ino} {name.decode()}")
            return value
    raise kerr(errno.ENODATA, name)


# -- write side ------------------------------------------------------------------------------
_NAME_HASH_SHIFT = 5
_VALUE_HASH_SHIFT = 16
_BLOCK_HASH_SHIFT = 16
_M32 = 0xFFFFFFFF


def entry_hash(name: bytes, value: bytes) -> int:
    """e_hash of an entry (ext4_xattr_hash_entry): the name's bytes, then the value's words."""
    h = 0
    for c in name:
        if c >= 128:
            c -= 256  # the kernel hashes signed chars
        h = ((h << _NAME_HASH_SHIFT) ^ (h >> (32 - _NAME_HASH_SHIFT)) ^ c) & _M32
    if value:
        padded = value + bytes(-len(value) % 4)
        for w in struct.unpack(f"<{len(padded) // 4}I", padded):
            h = ((h << _VALUE_HASH_SHIFT) ^ (h >> (32 - _VALUE_HASH_SHIFT)) ^ w) & _M32
    return h


def _block_hash(hashes: list[int]) -> int:
    h = 0
    for e in hashes:
        if not e:
            return 0
        h = ((h << _BLOCK_HASH_SHIFT) ^ (h >> (32 - _BLOCK_HASH_SHIFT)) ^ e) & _M32
    return h


def _entry_size(name: bytes) -> int:
    return (16 + len(name) + 3) & ~3


def _value_size(value: bytes) -> int:
    return (len(value) + 3) & ~3


def _pack(items: list[tuple[int, bytes, bytes]], size: int, first: int,
          value_base: int) -> tuple[bytearray, list[int]] | None:
    """Lay ``items`` out in an area of ``size`` bytes: entries from ``first`` (then a 4-byte
    terminator), values packed down from the end. None if they do not fit."""
    area = bytearray(size)
    pos = first
    vend = size
    hashes = []
    for index, name, value in items:
        vlen = _value_size(value)
        if pos + _entry_size(name) + 4 > vend - vlen:
            return None
        vend -= vlen
        area[vend:vend + len(value)] = value
        h = entry_hash(name, value)
        hashes.append(h)
        struct.pack_into("<BBHIII", area, pos, len(name), index, vend - value_base if value else 0,
                         0, len(value), h)
        area[pos + 16:pos + 16 + len(name)] = name
        pos += _entry_size(name)
    return area, hashes


def store_xattrs(inode: Ext4Inode, items: list[tuple[int, bytes, bytes]]) -> None:
    """Store every attribute of ``inode``: in the inode body while they fit, the rest in an
    xattr block (a shared block is copied, never changed). ENOSPC if they cannot fit."""
    sb = inode.sb
    bs = sb.blocksize
    raw = bytearray(inode.raw)
    ibody_start = EXT4_GOOD_OLD_INODE_SIZE + inode.extra_isize
    ibody_size = len(raw) - ibody_start - 4 if len(raw) > ibody_start + 4 else 0
    # keep the order stable: sorted by (index, name) as e2fsprogs writes them
    items = sorted(items, key=lambda t: (t[0], len(t[1]), t[1]))
    inbody: list[tuple[int, bytes, bytes]] = []
    rest: list[tuple[int, bytes, bytes]] = []
    used = 4
    for it in items:
        need = _entry_size(it[1]) + _value_size(it[2])
        if used + need <= ibody_size and not rest:
            inbody.append(it)
            used += need
        else:
            rest.append(it)
    block_area = None
    if rest:
        packed = _pack(rest, bs, 32, 0)
        if packed is None:
            raise kerr(errno.ENOSPC, f"ext4 inode {inode.ino}", "extended attributes do not fit")
        block_area = packed
    # the inode body
    if ibody_size:
        if inbody:
            packed_body = _pack(inbody, ibody_size, 0, 0)
            assert packed_body is not None
            raw[ibody_start:ibody_start + 4] = _U32.pack(EXT4_XATTR_MAGIC)
            raw[ibody_start + 4:] = packed_body[0]
        else:
            raw[ibody_start:] = bytes(len(raw) - ibody_start)
    inode.raw = bytes(raw)
    # the block
    old = inode.file_acl
    if block_area is None:
        if old:
            release_block(inode, old)
            inode.file_acl = 0
            inode.blocks -= sb.cluster_size >> 9
    else:
        area, hashes = block_area
        blk = old
        if old:
            buf = sb.bread(old)
            refcount = _HDR.unpack_from(buf.data, 0)[1]
            if refcount > 1:
                release_block(inode, old)
                blk = 0
        if not blk:
            goal = sb.group_first_block((inode.ino - 1) // sb.inodes_per_group)
            blk = sb.alloc.alloc_blocks(goal, 1, metadata=True)[0]
            if not old:
                inode.blocks += sb.cluster_size >> 9
        _HDR.pack_into(area, 0, EXT4_XATTR_MAGIC, 1, 1, _block_hash(hashes), 0)
        if sb.metadata_csum:
            struct.pack_into("<I", area, 16, xattr_block_csum(sb.csum_seed, blk, area))
        buf = sb.bcache.getblk(sb.io, blk, bs)
        buf.data[:] = area
        buf.private = _BLOCK_OK
        sb.bcache.mark_dirty(buf)
        inode.file_acl = blk
    inode._xattrs = None
    sb.dirty_inode(inode)


def release_block(inode: Ext4Inode, blk: int) -> None:
    """Drop the inode's reference to xattr block ``blk``: free it when it was the last."""
    sb = inode.sb
    buf = sb.bread(blk)
    data = buf.data
    refcount = _HDR.unpack_from(data, 0)[1]
    if refcount <= 1:
        sb.alloc.free_blocks(blk, 1)
        return
    struct.pack_into("<I", data, 4, refcount - 1)
    if sb.metadata_csum:
        struct.pack_into("<I", data, 16, xattr_block_csum(sb.csum_seed, blk, data))
    sb.bcache.mark_dirty(buf)


def current_items(inode: Ext4Inode) -> list[tuple[int, bytes, bytes]]:
    """Every stored attribute as (index, name, raw value); EOPNOTSUPP for ea_inode values."""
    out = []
    for e in inode.xattr_entries():
        if e[2] is None:
            raise kerr(errno.EOPNOTSUPP, f"ext4 inode {inode.ino}",
                       "changing attributes stored in their own inodes (ea_inode) is not supported")
        out.append((e[0], e[1], e[2]))
    return out


def set_xattr(inode: Ext4Inode, name: bytes, value: bytes | None, flags: int) -> None:
    """setxattr (value) or removexattr (None), with XATTR_CREATE/XATTR_REPLACE semantics."""
    from ...uapi import XATTR_CREATE, XATTR_REPLACE

    key = split_name(name)
    if key is None or key[0] == EXT4_XATTR_INDEX_SYSTEM:
        raise kerr(errno.EOPNOTSUPP, name)
    index, suffix = key
    if len(suffix) > 255:
        raise kerr(errno.ERANGE, name)
    if inode.inline:  # system.data must stay in the inode body: move the data out first
        from .inline import uninline

        uninline(inode)
    items = current_items(inode)
    exists = any(i == index and n == suffix for i, n, _v in items)
    if value is None and not exists:
        raise kerr(errno.ENODATA, name)
    if flags & XATTR_CREATE and exists:
        raise kerr(errno.EEXIST, name)
    if flags & XATTR_REPLACE and not exists:
        raise kerr(errno.ENODATA, name)
    items = [t for t in items if not (t[0] == index and t[1] == suffix)]
    if value is not None:
        if index in _ACL_INDEXES:
            from .acl import acl_to_disk

            value = acl_to_disk(value)
        items.append((index, suffix, bytes(value)))
    store_xattrs(inode, items)
