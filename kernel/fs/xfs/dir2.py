"""Directory operations over every format (libxfs/xfs_dir2.c, xfs_dir2_readdir.c).

The format follows from the data fork: local (short form), one directory
block (block form), one leaf block after the data (leaf form) or a dabtree
of leaves with a free index (node form); any of the last three may sit in an
extents- or btree-format fork. Lookups in leaf and node form go through the
hash index; short and block form are parsed once into a name table.

readdir cookies are data-space addresses in 8-byte units (Linux's
``xfs_dir2_dataptr_t``): an entry's cookie is the address just past it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ...errors import corrupted
from ...vfs.inode import table_now
from . import ondisk as od
from .da_btree import DATA_FORK, ascii_ci_hashname, da_hashname, read_dablock
from .dir2_block import block_entries
from .dir2_data import check_magic, entsize, iter_entries
from .dir2_node import node_lookup
from .dir2_sf import parse_sf

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .inode import XfsInode

DT_DIR = 4
_FTYPE_OF_DT: dict[int, int] = {}  # filled below from FTYPE_TO_DT
FMT_SF, FMT_BLOCK, FMT_LEAF, FMT_NODE = range(4)
_PREFETCH = 64


for _ft, _dt in enumerate(od.FTYPE_TO_DT):
    _FTYPE_OF_DT.setdefault(_dt, _ft)


def dir_format(inode: XfsInode) -> int:
    if inode.format == od.XFS_DINODE_FMT_LOCAL:
        return FMT_SF
    geo = inode.sb.geo
    end = inode.fork_map(DATA_FORK).last_end()
    if end == geo.dirblkfsbs:
        return FMT_BLOCK
    if end == geo.dir_leaf_fsb + geo.dirblkfsbs:
        return FMT_LEAF
    if end <= geo.dir_leaf_fsb:
        raise corrupted(f"directory inode {inode.ino}", "no leaf blocks after the data blocks")
    return FMT_NODE


def _dtype(ft: int, has_ftype: bool) -> int:
    if not has_ftype or ft >= len(od.FTYPE_TO_DT):
        return 0
    return od.FTYPE_TO_DT[ft]


def _table(inode: XfsInode) -> dict[bytes, tuple[int, int]]:
    """Name table of a short-form or block-form directory, cached on the inode."""
    table = inode.dir_table
    if table is not None:
        return table
    table = {}
    if inode.dir_fmt == FMT_SF:
        parent, ents = _sf(inode)
        for _off, name, ino, ft in ents:
            table[name] = (ino, ft)
    else:
        for _off, name, ino, ft, _size in block_entries(inode):
            table[name] = (ino, ft)
    inode.dir_table = table
    return table


def _sf(inode: XfsInode) -> tuple[int, list[tuple[int, bytes, int, int]]]:
    return parse_sf(inode.fork_data(DATA_FORK), inode.size, inode.sb.geo.ftype,
                    f"short-form directory inode {inode.ino}")


def lookup(inode: XfsInode, name: bytes) -> tuple[int, int] | None:
    """(ino, ftype) of ``name`` in directory ``inode``, or None."""
    geo = inode.sb.geo
    if inode.dir_fmt in (FMT_SF, FMT_BLOCK) or inode.dir_table is not None:
        table = _table(inode)
        hit = table.get(name)
        if hit is None and geo.asciici:
            low = name.lower()
            for n, v in table.items():
                if n.lower() == low:
                    return v
        return hit
    inode.lookups += 1
    if table_now(inode.lookups, inode.size):
        # looked up often (a walk of the tree): read every name once, as readdir does
        try:
            for _ in iterate(inode, 0):
                pass
        except OSError as e:  # a damaged block: search by name, as before
            log.warning("xfs directory inode %d: %s; looking names up one by one", inode.ino, e)
        if inode.dir_table is not None:
            return lookup(inode, name)
    if geo.asciici:
        return node_lookup(inode, name, ascii_ci_hashname(name), name.lower())
    return node_lookup(inode, name, da_hashname(name), None)


def iterate(inode: XfsInode, pos: int) -> Iterator[tuple[bytes, int, int, int]]:
    """Entries (name, ino, d_type, next cookie) from cookie ``pos`` on."""
    geo = inode.sb.geo
    ft_on = geo.ftype
    start = pos << 3
    if inode.dir_fmt == FMT_SF:
        parent, ents = _sf(inode)
        hdr = geo.dir_data_hdr
        dot2 = hdr + entsize(1, ft_on)
        first = dot2 + entsize(2, ft_on)
        if start <= hdr:
            yield b".", inode.ino, DT_DIR, dot2 >> 3
        if start <= dot2:
            yield b"..", parent, DT_DIR, first >> 3
        for off, name, ino, ft in ents:
            if off >= start:
                yield name, ino, _dtype(ft, ft_on), (off + entsize(len(name), ft_on)) >> 3
        return
    if inode.dir_fmt == FMT_BLOCK:
        for off, name, ino, ft, size in block_entries(inode):
            if off >= start:
                yield name, ino, _dtype(ft, ft_on), (off + size) >> 3
        return
    # leaf and node form: remember the names of a walk from the start, for lookups
    seen = inode.dir_seen
    names = None
    if inode.dir_table is None:
        if start == 0:
            names = {}
        elif seen is not None and start <= seen[1]:
            names = seen[0]  # getdents goes on where the last call stopped
    if names is not None:
        for name, ino, dt, nxt in _iterate_data_blocks(inode, start):
            names[name] = (ino, _FTYPE_OF_DT.get(dt, 0))
            inode.dir_seen = (names, nxt << 3)
            yield name, ino, dt, nxt
        if inode.dir_seen is not None and inode.dir_seen[0] is names:
            inode.dir_table = names  # walked to the end: every name is here
            inode.dir_seen = None
        return
    yield from _iterate_data_blocks(inode, start)


def _iterate_data_blocks(inode: XfsInode, start: int) -> Iterator[tuple[bytes, int, int, int]]:
    sb = inode.sb
    geo = sb.geo
    ft_on = geo.ftype
    nfsb = geo.dirblkfsbs
    dsize = geo.dirblksize
    hdr = geo.dir_data_hdr
    magics = (od.XFS_DIR3_DATA_MAGIC,) if geo.crc else (od.XFS_DIR2_DATA_MAGIC,)
    emap = inode.fork_map(DATA_FORK)
    first_db = start // dsize
    last = -1
    for s, n, pblk, _unw in list(emap.find(first_db * nfsb, geo.dir_leaf_fsb)):
        e = min(s + n, geo.dir_leaf_fsb)
        if nfsb == 1:
            # warm the cache with the extent's blocks in a few multi-block requests
            b0 = max(s, first_db)
            for k in range(b0, e, _PREFETCH):
                cnt = min(_PREFETCH, e - k)
                sb.bcache.bread_many(sb.xdev, pblk + k - s, cnt, geo.blocksize)
        db = max(s, first_db * nfsb) // nfsb
        while db * nfsb < e:
            if db > last:
                last = db
                what = f"directory inode {inode.ino} data block {db * nfsb}"
                data = read_dablock(inode, DATA_FORK, db * nfsb, nfsb, what)
                check_magic(data, magics, what)
                base = db * dsize
                for off, name, ino, ft, size in iter_entries(data, max(start - base, 0), dsize,
                                                             ft_on, hdr, what):
                    yield name, ino, _dtype(ft, ft_on), (base + off + size) >> 3
            db += 1

