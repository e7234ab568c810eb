"""Single-block directories (libxfs/xfs_dir2_block.c).

The one directory block holds the data entries, then the leaf (sorted
(hashval, address) pairs, ``count`` of them) and a tail {count, stale} in the
last 8 bytes. The block is parsed once into a name table and cached with the
inode; lookups are then a dictionary probe, the same cost as a hash search
through the block's own leaf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import corrupted
from . import ondisk as od
from .da_btree import DATA_FORK, read_dablock
from .dir2_data import check_magic, iter_entries

if TYPE_CHECKING:
    from .inode import XfsInode


def block_entries(inode: XfsInode) -> list[tuple[int, bytes, int, int, int]]:
    """Every used entry of the block: (offset, name, ino, ftype, size)."""
    geo = inode.sb.geo
    what = f"directory block of inode {inode.ino}"
    data = read_dablock(inode, DATA_FORK, 0, geo.dirblkfsbs, what)
    check_magic(data, (od.XFS_DIR3_BLOCK_MAGIC,) if geo.crc else (od.XFS_DIR2_BLOCK_MAGIC,), what)
    size = geo.dirblksize
    count, stale = od.xfs_dir2_block_tail.unpack_from(data, size - 8)
    end = size - 8 - count * 8
    if end < geo.dir_data_hdr or stale > count:
        raise corrupted(what, f"bad block tail (count {count}, stale {stale})")
    return list(iter_entries(data, 0, end, geo.ftype, geo.dir_data_hdr, what))
