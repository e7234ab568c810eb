"""Attribute leaf blocks (libxfs/xfs_attr_leaf.c).

A leaf holds sorted entries {hashval, nameidx, flags}; ``nameidx`` points
into the block at either a local name {valuelen 16, namelen 8, name, value}
or a remote one {valueblk 32, valuelen 32, namelen 8, name} whose value
lives in separate attribute-fork blocks. Node-form forks put a dabtree of
such leaves under the root at fork block 0.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ...errors import corrupted
from . import ondisk as od

if TYPE_CHECKING:
    from .sb import XfsGeometry

_u32 = struct.Struct(">I")
_ent = od.xfs_attr_leaf_entry
_loc = od.xfs_attr_leaf_name_local
_rmt = od.xfs_attr_leaf_name_remote


class AttrEntry:
    """One attribute: a local ``value`` or a remote (``valueblk``, ``valuelen``)."""

    __slots__ = ("hashval", "flags", "name", "value", "valueblk", "valuelen")

    def __init__(self, hashval: int, flags: int, name: bytes, value: bytes | None,
                 valueblk: int, valuelen: int) -> None:
        self.hashval = hashval
        self.flags = flags
        self.name = name
        self.value = value
        self.valueblk = valueblk
        self.valuelen = valuelen


class AttrLeaf:
    __slots__ = ("hashes", "entries", "forw")

    def __init__(self, hashes: list[int], entries: list[AttrEntry], forw: int) -> None:
        self.hashes = hashes
        self.entries = entries
        self.forw = forw


def parse_leaf(geo: XfsGeometry, data: memoryview, what: str) -> AttrLeaf:
    """Parse every entry of a leaf; EUCLEAN for overruns or unsorted hashes."""
    bs = geo.blocksize
    hdr = od.XFS_ATTR3_LEAF_HDR_SIZE if geo.crc else od.XFS_ATTR_LEAF_HDR_SIZE
    count = struct.unpack_from(">H", data, 56 if geo.crc else 12)[0]
    if hdr + count * 8 > bs:
        raise corrupted(what, f"bad leaf header ({count} entries)")
    names_start = hdr + count * 8
    hashes: list[int] = []
    entries: list[AttrEntry] = []
    prev = 0
    for i in range(count):
        hashval, nameidx, flags, _pad = _ent.unpack_from(data, hdr + i * 8)
        if hashval < prev:
            raise corrupted(what, "leaf hashes out of order")
        prev = hashval
        if nameidx < names_start or nameidx >= bs:
            raise corrupted(what, f"entry {i} name index {nameidx} out of the block")
        if flags & od.XFS_ATTR_LOCAL:
            if nameidx + 3 > bs:
                raise corrupted(what, f"entry {i} overruns the block")
            valuelen, namelen = _loc.unpack_from(data, nameidx)
            p = nameidx + 3
            if namelen == 0 or p + namelen + valuelen > bs:
                raise corrupted(what, f"entry {i} overruns the block")
            e = AttrEntry(hashval, flags, bytes(data[p:p + namelen]),
                          bytes(data[p + namelen:p + namelen + valuelen]), 0, valuelen)
        else:
            if nameidx + 9 > bs:
                raise corrupted(what, f"entry {i} overruns the block")
            valueblk, valuelen, namelen = _rmt.unpack_from(data, nameidx)
            p = nameidx + 9
            if namelen == 0 or p + namelen > bs:
                raise corrupted(what, f"entry {i} overruns the block")
            e = AttrEntry(hashval, flags, bytes(data[p:p + namelen]), None, valueblk, valuelen)
        hashes.append(hashval)
        entries.append(e)
    return AttrLeaf(hashes, entries, _u32.unpack_from(data, 0)[0])
