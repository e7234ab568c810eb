"""Directory leaf blocks (libxfs/xfs_dir2_leaf.c).

A leaf block lives in the directory's leaf space (from 32 GiB). It holds the
sorted (hashval, address) index of every entry: a LEAF1 block indexes a
whole leaf-form directory and ends with the bests table; LEAFN blocks are the
leaves of a node-form directory's dabtree. A zero address is a stale entry.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ...errors import corrupted
from . import ondisk as od

if TYPE_CHECKING:
    from .sb import XfsGeometry

_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")


class Leaf:
    __slots__ = ("hashes", "addrs", "forw")

    def __init__(self, hashes: list[int], addrs: list[int], forw: int) -> None:
        self.hashes = hashes
        self.addrs = addrs
        self.forw = forw


def parse_leaf(geo: XfsGeometry, data: memoryview, what: str) -> Leaf:
    """Parse a LEAF1 or LEAFN block; EUCLEAN if counts overrun or hashes are unsorted."""
    size = geo.dirblksize
    magic = _u16.unpack_from(data, 8)[0]
    hdr = od.XFS_DIR3_LEAF_HDR_SIZE if geo.crc else od.XFS_DIR2_LEAF_HDR_SIZE
    count, stale = struct.unpack_from(">HH", data, 56 if geo.crc else 12)
    limit = size
    if magic in (od.XFS_DIR3_LEAF1_MAGIC, od.XFS_DIR2_LEAF1_MAGIC):
        bestcount = _u32.unpack_from(data, size - 4)[0]
        limit = size - 4 - 2 * bestcount
    if hdr + count * 8 > limit or stale > count:
        raise corrupted(what, f"bad leaf header ({count} entries, {stale} stale)")
    vals = struct.unpack_from(f">{2 * count}I", data, hdr)
    hashes = list(vals[0::2])
    if any(hashes[i] > hashes[i + 1] for i in range(count - 1)):
        raise corrupted(what, "leaf hashes out of order")
    return Leaf(hashes, list(vals[1::2]), _u32.unpack_from(data, 0)[0])
