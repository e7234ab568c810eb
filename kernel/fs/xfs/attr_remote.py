"""Remote attribute values (libxfs/xfs_attr_remote.c).

A value too large for its leaf lives in attribute-fork blocks from
``valueblk``. On v5 filesystems every filesystem block starts with an
``xfs_attr3_rmt_hdr`` (offset and byte count of its piece, owner, address,
CRC over the block); on v4 the blocks hold the bare value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import corrupted
from . import ondisk as od
from .cksum import crc_ok
from .da_btree import ATTR_FORK

if TYPE_CHECKING:
    from .inode import XfsInode

_HDR = od.xfs_attr3_rmt_hdr.size


def read_remote(inode: XfsInode, valueblk: int, valuelen: int, what: str) -> bytes:
    """The remote value of ``valuelen`` bytes; EUCLEAN for holes or bad headers."""
    sb = inode.sb
    geo = sb.geo
    bs = geo.blocksize
    space = bs - _HDR if geo.crc else bs
    nblocks = (valuelen + space - 1) // space
    if valuelen > od_XATTR_SIZE_MAX or nblocks == 0 and valuelen:
        raise corrupted(what, f"remote value of bad length {valuelen}")
    runs = inode.fork_map(ATTR_FORK).map_run(valueblk, nblocks)
    if runs is None:
        raise corrupted(what, f"remote value at attribute block {valueblk} is not mapped")
    out = bytearray()
    left = valuelen
    for pblk, n in runs:
        for k, buf in enumerate(sb.bcache.bread_many(sb.xdev, pblk, n, bs)):
            data = buf.data
            take = min(left, space)
            if geo.crc:
                bwhat = f"{what}: remote value block {pblk + k}"
                h = od.xfs_attr3_rmt_hdr.unpack_from(data, 0)
                if h.rm_magic != od.XFS_ATTR3_RMT_MAGIC:
                    raise corrupted(bwhat, f"bad magic {h.rm_magic:#x}")
                if not crc_ok(data, od.XFS_ATTR3_RMT_CRC_OFF):
                    raise corrupted(bwhat, "metadata checksum mismatch")
                if h.rm_offset != len(out) or h.rm_bytes != take or h.rm_owner != inode.ino \
                        or h.rm_blkno != geo.linear_to_daddr(pblk + k) \
                        or h.rm_uuid != geo.meta_uuid:
                    raise corrupted(bwhat, "block header does not belong here")
                out += data[_HDR:_HDR + take]
            else:
                out += data[:take]
            left -= take
    return bytes(out)


od_XATTR_SIZE_MAX = 1 << 16
