"""Hashed lookup in leaf- and node-form directories (libxfs/xfs_dir2_node.c).

The name's hash is looked up through the dabtree rooted at the first leaf
block (a LEAF1 block for a leaf-form directory, a node or LEAFN block for a
node-form one). Matching hashes may continue into the next leaf, followed
through its forward link. Each candidate address is checked against the
data entry's name.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from ...errors import corrupted
from . import ondisk as od
from .da_btree import DATA_FORK, _bind, cached_parse, magic16, read_dablock, walk_to_leaf
from .dir2_data import entry_at
from .dir2_leaf import parse_leaf

if TYPE_CHECKING:
    from .inode import XfsInode


def node_lookup(inode: XfsInode, name: bytes, hashval: int, fold: bytes | None,
                ) -> tuple[int, int] | None:
    """(ino, ftype) of ``name`` or None; ``fold`` is the case-folded name on ASCII-CI."""
    sb = inode.sb
    geo = sb.geo
    nfsb = geo.dirblkfsbs
    what = f"directory inode {inode.ino}"
    node_magic = od.XFS_DA3_NODE_MAGIC if geo.crc else od.XFS_DA_NODE_MAGIC
    leaf_magics = (od.XFS_DIR3_LEAF1_MAGIC, od.XFS_DIR3_LEAFN_MAGIC) if geo.crc else \
        (od.XFS_DIR2_LEAF1_MAGIC, od.XFS_DIR2_LEAFN_MAGIC)
    blk, data = walk_to_leaf(inode, DATA_FORK, geo.dir_leaf_fsb, nfsb, hashval, node_magic, what)
    ci_match: tuple[int, int] | None = None
    data_hdr = geo.dir_data_hdr
    dsize = geo.dirblksize
    shift = geo.blocklog + geo.dirblklog
    seen = 0
    while True:
        if magic16(data) not in leaf_magics:
            raise corrupted(f"{what} leaf block {blk}", f"bad magic {magic16(data):#x}")
        leaf = cached_parse(inode, DATA_FORK, blk, "leaf",
                            _bind(parse_leaf, geo, data, f"{what} leaf block {blk}"))
        hashes = leaf.hashes
        n = len(hashes)
        i = bisect.bisect_left(hashes, hashval)
        while i < n and hashes[i] == hashval:
            addr = leaf.addrs[i]
            i += 1
            if addr == od.XFS_DIR2_NULL_DATAPTR:
                continue
            byte = addr << 3
            db = byte >> shift
            off = byte & (dsize - 1)
            if byte >= od.XFS_DIR2_LEAF_OFFSET:
                raise corrupted(f"{what} leaf block {blk}", f"address {addr:#x} outside data space")
            dablk = db * nfsb
            bwhat = f"{what} data block {dablk}"
            dblk = read_dablock(inode, DATA_FORK, dablk, nfsb, bwhat)
            ename, ino, ft = entry_at(dblk, off, dsize, geo.ftype, data_hdr, bwhat)
            if ename == name:
                return ino, ft
            if fold is not None and ci_match is None and fold == ename.lower():
                ci_match = (ino, ft)
        if i < n or not leaf.forw or (n and hashes[-1] != hashval):
            return ci_match
        seen += 1
        if seen > inode.fork_map(DATA_FORK).last_end():
            raise corrupted(what, "leaf chain longer than the directory (a cycle?)")
        blk = leaf.forw
        data = read_dablock(inode, DATA_FORK, blk, nfsb, f"{what} leaf block {blk}")
