"""Extended attributes over every attribute-fork format (libxfs/xfs_attr.c, xfs_xattr.c).

Names carry a namespace in their flags: none is ``user.``, ROOT is
``trusted.``, SECURE is ``security.``; parent pointers are hidden. As in
Linux, root-namespace SGI_ACL_FILE/SGI_ACL_DEFAULT are listed both under
their own names and as system.posix_acl_access/default.

Short form and single-leaf forks are parsed whole; node-form lookups go
through the hash index, and a listing parses every leaf once and keeps the
table with the inode.
"""

from __future__ import annotations

import bisect
import errno
from typing import TYPE_CHECKING

from ...errors import corrupted, kerr
from . import ondisk as od
from .acl import acl_to_xattr
from .attr_leaf import AttrEntry, AttrLeaf, parse_leaf
from .attr_remote import read_remote
from .attr_sf import parse_sf
from .da_btree import ATTR_FORK, cached_parse, da_hashname, leftmost_leaf, magic16, read_dablock, walk_to_leaf

if TYPE_CHECKING:
    from .inode import XfsInode

_PREFIX = {0: b"user.", od.XFS_ATTR_ROOT: b"trusted.", od.XFS_ATTR_SECURE: b"security."}
_NS = ((b"user.", 0), (b"trusted.", od.XFS_ATTR_ROOT), (b"security.", od.XFS_ATTR_SECURE))
ACL_ACCESS = b"system.posix_acl_access"
ACL_DEFAULT = b"system.posix_acl_default"
_NSMASK = od.XFS_ATTR_NSP_ONDISK_MASK
_SKIP = od.XFS_ATTR_INCOMPLETE | od.XFS_ATTR_PARENT


def _magics(inode: XfsInode) -> tuple[int, int]:
    if inode.sb.geo.crc:
        return od.XFS_ATTR3_LEAF_MAGIC, od.XFS_DA3_NODE_MAGIC
    return od.XFS_ATTR_LEAF_MAGIC, od.XFS_DA_NODE_MAGIC


def _leaf(inode: XfsInode, blk: int, data: memoryview) -> AttrLeaf:
    what = f"attribute leaf block {blk} of inode {inode.ino}"
    leaf_magic, _node = _magics(inode)
    if magic16(data) != leaf_magic:
        raise corrupted(what, f"bad magic {magic16(data):#x}")
    geo = inode.sb.geo
    return cached_parse(inode, ATTR_FORK, blk, "attr",  # type: ignore[no-any-return]
                        lambda: parse_leaf(geo, data, what))


def _all_entries(inode: XfsInode) -> list[tuple[int, bytes, bytes | None, int, int]]:
    """Every visible attribute: (namespace flags, name, value or None, valueblk, valuelen)."""
    cached = inode.xattr_list
    if cached is not None:
        return cached
    out: list[tuple[int, bytes, bytes | None, int, int]] = []
    fmt = inode.aformat
    if fmt is None:
        pass
    elif fmt == od.XFS_DINODE_FMT_LOCAL:
        what = f"short-form attributes of inode {inode.ino}"
        for flags, name, value in parse_sf(inode.fork_data(ATTR_FORK), inode.fork_size(ATTR_FORK),
                                           what):
            if not flags & _SKIP:
                out.append((flags & _NSMASK, name, value, 0, len(value)))
    elif len(inode.fork_map(ATTR_FORK)):
        _leaf_magic, node_magic = _magics(inode)
        what = f"attribute fork of inode {inode.ino}"
        blk, data = leftmost_leaf(inode, ATTR_FORK, 0, 1, node_magic, what)
        nblocks = inode.fork_map(ATTR_FORK).last_end() + 1
        seen = 0
        while True:
            leaf = _leaf(inode, blk, data)
            for e in leaf.entries:
                if not e.flags & _SKIP:
                    out.append((e.flags & _NSMASK, e.name, e.value, e.valueblk, e.valuelen))
            if not leaf.forw:
                break
            seen += 1
            if seen > nblocks:
                raise corrupted(what, "leaf chain longer than the fork (a cycle?)")
            blk = leaf.forw
            data = read_dablock(inode, ATTR_FORK, blk, 1, f"{what} block {blk}")
    inode.xattr_list = out
    return out


def _find(inode: XfsInode, ns: int, name: bytes) -> tuple[bytes | None, int, int] | None:
    fmt = inode.aformat
    if fmt is None or fmt != od.XFS_DINODE_FMT_LOCAL and not len(inode.fork_map(ATTR_FORK)):
        return None
    if fmt == od.XFS_DINODE_FMT_LOCAL or inode.xattr_list is not None:
        index = inode.xattr_index
        if index is None:
            index = {}
            for flags, n, value, blk, vlen in _all_entries(inode):
                index.setdefault((flags, n), (value, blk, vlen))
            inode.xattr_index = index
        return index.get((ns, name))
    _leaf_magic, node_magic = _magics(inode)
    what = f"attribute fork of inode {inode.ino}"
    hashval = da_hashname(name)
    blk, data = walk_to_leaf(inode, ATTR_FORK, 0, 1, hashval, node_magic, what)
    for _ in range(1 << 16):
        leaf = _leaf(inode, blk, data)
        hashes = leaf.hashes
        i = bisect.bisect_left(hashes, hashval)
        while i < len(hashes) and hashes[i] == hashval:
            e: AttrEntry = leaf.entries[i]
            i += 1
            if not e.flags & _SKIP and e.flags & _NSMASK == ns and e.name == name:
                return e.value, e.valueblk, e.valuelen
        if i < len(hashes) or not leaf.forw or (hashes and hashes[-1] != hashval):
            return None
        blk = leaf.forw
        data = read_dablock(inode, ATTR_FORK, blk, 1, f"{what} block {blk}")
    raise corrupted(what, "leaf chain too long")


def _value(inode: XfsInode, found: tuple[bytes | None, int, int], name: bytes) -> bytes:
    value, blk, vlen = found
    if value is not None:
        return value
    return read_remote(inode, blk, vlen, f"attribute {name!r} of inode {inode.ino}")


def listxattr(inode: XfsInode) -> list[bytes]:
    names: list[bytes] = []
    for flags, name, _v, _b, _l in _all_entries(inode):
        prefix = _PREFIX.get(flags)
        if prefix is None:
            continue
        if flags == od.XFS_ATTR_ROOT:
            if name == od.SGI_ACL_FILE:
                names.append(ACL_ACCESS)
            elif name == od.SGI_ACL_DEFAULT:
                names.append(ACL_DEFAULT)
        names.append(prefix + name)
    return names


def getxattr(inode: XfsInode, full: bytes) -> bytes:
    """The value of attribute ``full`` (with its prefix); ENODATA when absent."""
    if full in (ACL_ACCESS, ACL_DEFAULT):
        raw = od.SGI_ACL_FILE if full == ACL_ACCESS else od.SGI_ACL_DEFAULT
        found = _find(inode, od.XFS_ATTR_ROOT, raw)
        if found is None:
            raise kerr(errno.ENODATA, full)
        return acl_to_xattr(_value(inode, found, raw), inode.sb.geo.crc,
                            f"ACL {full.decode()} of inode {inode.ino}")
    for prefix, ns in _NS:
        if full.startswith(prefix):
            name = full[len(prefix):]
            found = _find(inode, ns, name)
            if found is None:
                break
            return _value(inode, found, full)
    raise kerr(errno.ENODATA, full)
