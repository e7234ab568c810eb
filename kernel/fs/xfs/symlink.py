"""Symbolic link targets (libxfs/xfs_symlink_remote.c).

Short targets live in the inode (local format). Longer ones (up to 1024
bytes) live in blocks mapped by the data fork; on v5 filesystems each
mapping (extent) starts with an ``xfs_dsymlink_hdr`` giving the offset and
length of its piece, the owner and address, and a CRC over the mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import corrupted
from . import ondisk as od
from .cksum import crc_ok
from .da_btree import DATA_FORK

if TYPE_CHECKING:
    from .inode import XfsInode

_HDR = od.xfs_dsymlink_hdr.size


def read_target(inode: XfsInode) -> bytes:
    """The link target; EUCLEAN for bad lengths, holes or bad block headers."""
    what = f"symlink inode {inode.ino}"
    size = inode.size
    if not 0 < size <= od.XFS_SYMLINK_MAXLEN:
        raise corrupted(what, f"bad symlink length {size}")
    if inode.format == od.XFS_DINODE_FMT_LOCAL:
        if size > inode.fork_size(DATA_FORK):
            raise corrupted(what, "local target larger than the fork")
        return bytes(inode.fork_data(DATA_FORK)[:size])
    sb = inode.sb
    geo = sb.geo
    bs = geo.blocksize
    out = bytearray()
    for _off, n, pblk, _unw in inode.fork_map(DATA_FORK).find(0, od.XFS_MAX_FILEOFF):
        if len(out) >= size:
            break
        bufs = sb.bcache.bread_many(sb.xdev, pblk, n, bs)
        data = bufs[0].data if n == 1 else b"".join(b.data for b in bufs)
        if geo.crc:
            take = min(size - len(out), n * bs - _HDR)
            bwhat = f"{what}: target block {pblk}"
            h = od.xfs_dsymlink_hdr.unpack_from(data, 0)
            if h.sl_magic != od.XFS_SYMLINK_MAGIC:
                raise corrupted(bwhat, f"bad magic {h.sl_magic:#x}")
            if not crc_ok(data, od.XFS_SYMLINK_CRC_OFF):
                raise corrupted(bwhat, "metadata checksum mismatch")
            if h.sl_offset != len(out) or h.sl_bytes != take or h.sl_owner != inode.ino \
                    or h.sl_blkno != geo.linear_to_daddr(pblk) or h.sl_uuid != geo.meta_uuid:
                raise corrupted(bwhat, "block header does not belong here")
            out += data[_HDR:_HDR + take]
        else:
            out += data[:size - len(out)]
    if len(out) != size:
        raise corrupted(what, f"target blocks hold {len(out)} of {size} bytes")
    if b"\0" in out:
        raise corrupted(what, "NUL byte in the target")
    return bytes(out)
