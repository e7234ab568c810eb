"""Block mapping of inode forks: extent records and the bmap btree.

libxfs/xfs_bmap.c and xfs_bmap_btree.c: a fork in extents format holds its
packed 128-bit records inline; a fork in btree format holds the root of a
long-form B-tree whose leaves hold the records. Either way the result is an
``ExtentMap``: sorted, non-overlapping runs of (file offset, linear device
block, length, unwritten), validated once and cached with the inode.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...errors import corrupted
from . import ondisk as od
from .cksum import crc_ok

if TYPE_CHECKING:
    from .super import XfsSuper

_MASK54 = od.BMBT_STARTOFF_MASK
_MASK21 = od.BMBT_BLOCKCOUNT_MASK
_rec = od.xfs_bmbt_rec
_MAX_LEVELS = 10


class ExtentMap:
    """Sorted extents of one fork: parallel lists for bisecting."""

    __slots__ = ("offs", "ends", "pblks", "unwritten")

    def __init__(self) -> None:
        self.offs: list[int] = []
        self.ends: list[int] = []
        self.pblks: list[int] = []
        self.unwritten: list[bool] = []

    def __len__(self) -> int:
        return len(self.offs)

    def last_end(self) -> int:
        return self.ends[-1] if self.ends else 0

    def find(self, start: int, end: int) -> Iterator[tuple[int, int, int, bool]]:
        """Extents (off, count, pblk, unwritten) overlapping [start, end), in order."""
        offs = self.offs
        i = bisect.bisect_right(offs, start) - 1
        if i < 0 or self.ends[i] <= start:
            i += 1
        n = len(offs)
        while i < n and offs[i] < end:
            yield offs[i], self.ends[i] - offs[i], self.pblks[i], self.unwritten[i]
            i += 1

    def mapped_run(self, first: int, last: int) -> int:
        """The device block of ``first`` when one written extent holds [first, last), else -1."""
        i = bisect.bisect_right(self.offs, first) - 1
        if i >= 0 and last <= self.ends[i] and not self.unwritten[i]:
            return self.pblks[i] + first - self.offs[i]
        return -1

    def map_block(self, off: int) -> int | None:
        """The device block holding file block ``off``, or None for a hole."""
        i = bisect.bisect_right(self.offs, off) - 1
        if i >= 0 and off < self.ends[i]:
            return self.pblks[i] + off - self.offs[i]
        return None

    def map_run(self, off: int, count: int) -> list[tuple[int, int]] | None:
        """Device runs (pblk, n) covering [off, off+count), or None if any block is a hole."""
        runs: list[tuple[int, int]] = []
        pos = off
        for s, n, p, _u in self.find(off, off + count):
            if s > pos:
                return None
            take = min(s + n, off + count) - pos
            runs.append((p + pos - s, take))
            pos += take
        if pos < off + count:
            return None
        return runs


def decode_records(sb: XfsSuper, data: bytes | bytearray | memoryview, off: int, n: int,
                   emap: ExtentMap, what: str, realtime: bool = False) -> None:
    """Append ``n`` packed records at ``data[off:]`` to ``emap``, validating each.

    Raises EUCLEAN naming ``what`` for a zero-length, out-of-order or
    out-of-filesystem extent.
    """
    geo = sb.geo
    agblklog = geo.agblklog
    agmask = (1 << agblklog) - 1
    agcount = geo.agcount
    agblocks = geo.agblocks
    last_ag = agcount - 1
    last_len = geo.ag_length(last_ag)
    prev = emap.last_end()
    offs, ends, pblks, unw = emap.offs, emap.ends, emap.pblks, emap.unwritten
    for l0, l1 in _rec.iter_unpack(data[off:off + n * 16]):
        startoff = (l0 >> 9) & _MASK54
        count = l1 & _MASK21
        if count == 0 or startoff < prev or startoff + count > od.XFS_MAX_FILEOFF:
            raise corrupted(what, f"bad extent record at file block {startoff} ({count} blocks)")
        startblock = ((l0 & 0x1FF) << 43) | (l1 >> 21)
        if realtime:
            pblk = startblock
        else:
            agno = startblock >> agblklog
            agbno = startblock & agmask
            if agno >= agcount or agbno + count > (last_len if agno == last_ag else agblocks):
                raise corrupted(what, f"extent at file block {startoff} points outside the "
                                f"filesystem (block {startblock:#x}, {count} blocks)")
            pblk = agno * agblocks + agbno
        prev = startoff + count
        offs.append(startoff)
        ends.append(prev)
        pblks.append(pblk)
        unw.append(bool(l0 >> 63))


def read_btree(sb: XfsSuper, ino: int, root: memoryview, forksize: int, emap: ExtentMap,
               what: str, max_records: int, realtime: bool = False) -> None:
    """Walk the bmap btree whose root (``xfs_bmdr_block``) is ``root``.

    Leaves are read level by level in key order, each block verified
    (magic, level, record count, and on v5 CRC, owner, address, UUID).
    """
    geo = sb.geo
    level, numrecs = od.xfs_bmdr_block.struct.unpack_from(root, 0)
    maxrecs = (forksize - 4) // (od.XFS_BMBT_KEY_SIZE + od.XFS_BMBT_PTR_SIZE)
    if not 1 <= level < _MAX_LEVELS or not 1 <= numrecs <= maxrecs:
        raise corrupted(what, f"bad btree root (level {level}, {numrecs} records)")
    ptroff = 4 + maxrecs * od.XFS_BMBT_KEY_SIZE
    ptrs = [p for (p,) in _ptr.iter_unpack(root[ptroff:ptroff + numrecs * 8])]
    crc = geo.crc
    hdr = od.XFS_BTREE_LBLOCK_CRC_LEN if crc else od.XFS_BTREE_LBLOCK_LEN
    magic = od.XFS_BMAP_CRC_MAGIC if crc else od.XFS_BMAP_MAGIC
    bs = geo.blocksize
    blk_maxrecs = (bs - hdr) // 16
    seen: set[int] = set()
    bdev = sb.xdev
    bcache = sb.bcache
    total = 0
    while level > 0:
        level -= 1
        children: list[int] = []
        for fsb in ptrs:
            blk = geo.fsb_to_linear(fsb, 1, what + " btree pointer")
            if blk in seen:
                raise corrupted(what, f"bmap btree block {blk} is referenced twice")
            seen.add(blk)
            buf = bcache.bread(bdev, blk, bs)
            data = buf.data
            bname = f"{what}: bmap btree block {blk}"
            if buf.private is not _VERIFIED:
                h: Any = od.xfs_btree_lblock.unpack_from(data, 0) if crc else None
                bmagic, blevel, bnum = _lhdr.unpack_from(data, 0)
                if bmagic != magic:
                    raise corrupted(bname, f"bad magic {bmagic:#x}")
                if crc:
                    if not crc_ok(data, od.XFS_BTREE_LBLOCK_CRC_OFF):
                        raise corrupted(bname, "metadata checksum mismatch")
                    if h.bb_uuid != geo.meta_uuid or h.bb_owner != ino \
                            or h.bb_blkno != geo.linear_to_daddr(blk):
                        raise corrupted(bname, "block header does not belong here "
                                        f"(owner {h.bb_owner}, daddr {h.bb_blkno})")
                buf.private = _VERIFIED
            else:
                bmagic, blevel, bnum = _lhdr.unpack_from(data, 0)
            if blevel != level or not 1 <= bnum <= blk_maxrecs:
                raise corrupted(bname, f"level {blevel} with {bnum} records where level "
                                f"{level} was expected")
            if level == 0:
                total += bnum
                if total > max_records:
                    raise corrupted(what, "more extent records than the fork can have")
                decode_records(sb, data, hdr, bnum, emap, bname, realtime)
            else:
                off = hdr + blk_maxrecs * od.XFS_BMBT_KEY_SIZE
                children.extend(p for (p,) in _ptr.iter_unpack(data[off:off + bnum * 8]))
        ptrs = children


_VERIFIED = object()
_ptr = od.xfs_bmbt_rec.__class__(">Q")
_lhdr = od.xfs_bmbt_rec.__class__(">IHH")
