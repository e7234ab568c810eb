"""File data on a read-write mount (fs/ext4/inode.c, extents.c, file.c: the write side).

An inode's block map is kept in memory as sorted runs ``(logical block,
count, physical block, unwritten)`` (what the read side flattens from the
extent tree or the indirect blocks). Writes, truncation and fallocate change
the runs and note the range they touched; at the end of the transaction
``store_map`` writes the map back: the extent tree is rebuilt packed, only
the touched indirect blocks are rewritten.

Data goes straight to the device, around the buffer cache, before the
metadata that points to it is written (ordered mode). New blocks are written
whole: the parts of a block a write does not cover are zeros, so nothing
stale from a freed block can show. Holes stay holes.
"""

from __future__ import annotations

import bisect
import errno
from typing import TYPE_CHECKING

from ...errors import kerr
from ...uapi import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from .extents import extent_tree_size, store_extents, tree_blocks
from .indirect import indirect_cover, store_indirect
from .ondisk import EXT4_EXTENTS_FL

if TYPE_CHECKING:
    from .inode import Ext4Inode

Run = tuple[int, int, int, bool]


def _uninline(inode: Ext4Inode) -> None:
    if inode.inline:
        from .inline import uninline

        uninline(inode)


# -- the in-memory map ------------------------------------------------------------------------
def _touch(inode: Ext4Inode, lo: int, hi: int) -> None:
    """Note that the map changed over logical blocks [lo, hi), and what storing it may
    take: the blocks the tree will need are held back from data (``Allocator.owed``), so
    that a full filesystem can still store the maps of what it holds."""
    inode.map_lo = min(inode.map_lo, lo)
    inode.map_hi = max(inode.map_hi, hi)
    sb = inode.sb
    sb.dirty_inode(inode)
    owed = _map_owed(inode)
    if owed != inode.owed:
        sb.alloc.owed += owed - inode.owed
        inode.owed = owed


def _map_owed(inode: Ext4Inode) -> int:
    """At most how many new blocks the next ``store_map`` of ``inode`` allocates."""
    sb = inode.sb
    if inode.i_flags & EXT4_EXTENTS_FL:
        # each extent holds up to 32,767 blocks (unwritten): a long run may take several
        n = len(inode.runs()) + (inode.blocks << 9) // (sb.blocksize * 32767)
        if n <= 4:
            return 0  # in the inode
        need = extent_tree_size(n, (sb.blocksize - 12) // 12)
        if inode.tblocks is None:
            inode.tblocks = tree_blocks(inode)
        return max(need - len(inode.tblocks), 0)
    return indirect_cover(inode.map_lo, inode.map_hi, sb.blocksize // 4)


def _merge(runs: list[Run]) -> list[Run]:
    out: list[Run] = []
    for r in runs:
        if out:
            s, n, p, u = out[-1]
            if s + n == r[0] and p + n == r[2] and u == r[3]:
                out[-1] = (s, n + r[1], p, u)
                continue
        out.append(r)
    return out


def _window(inode: Ext4Inode, start: int, end: int) -> tuple[int, int]:
    """Indices [i, j) of the runs that overlap logical blocks [start, end)."""
    runs = inode.runs()
    starts = inode._starts
    i = bisect.bisect_right(starts, start) - 1
    if i < 0 or runs[i][0] + runs[i][1] <= start:
        i += 1
    return i, bisect.bisect_left(starts, end)


def punch(inode: Ext4Inode, start: int, end: int) -> None:
    """Unmap logical blocks [start, end) and free them (the map changes in place)."""
    runs = inode.runs()
    starts = inode._starts
    i, j = _window(inode, start, end)
    if i >= j:
        return
    keep: list[Run] = []
    gone: list[tuple[int, int]] = []
    for s, n, p, u in runs[i:j]:
        e = s + n
        if s < start:
            keep.append((s, start - s, p, u))
        a, b = max(s, start), min(e, end)
        gone.append((p + a - s, b - a))
        if e > end:
            keep.append((end, e - end, p + end - s, u))
    inode.sb.flush_data()  # nothing queued may land on blocks after they are reused
    alloc = inode.sb.alloc
    freed = 0
    for p, n in gone:
        alloc.free_blocks(p, n)
        freed += n
    inode.blocks -= freed * (inode.sb.blocksize >> 9)
    runs[i:j] = keep
    starts[i:j] = [r[0] for r in keep]
    _touch(inode, start, end)


def _insert(inode: Ext4Inode, lblk: int, n: int, pblk: int, unwritten: bool) -> None:
    """Map the hole [lblk, lblk + n) to ``pblk``..., merged with the runs it continues.

    The run list changes in place: a file written extent by extent (a sparse file, a
    fragmented image) costs a list insert per extent, not a copy of its whole map."""
    runs = inode.runs()
    starts = inode._starts
    i = bisect.bisect_right(starts, lblk)
    prev = runs[i - 1] if i else None
    nxt = runs[i] if i < len(runs) else None
    join_prev = prev is not None and prev[0] + prev[1] == lblk and prev[2] + prev[1] == pblk \
        and prev[3] == unwritten
    join_next = nxt is not None and nxt[0] == lblk + n and nxt[2] == pblk + n \
        and nxt[3] == unwritten
    if join_prev and join_next:
        runs[i - 1] = (prev[0], prev[1] + n + nxt[1], prev[2], unwritten)  # type: ignore[index]
        del runs[i]
        del starts[i]
    elif join_prev:
        runs[i - 1] = (prev[0], prev[1] + n, prev[2], unwritten)  # type: ignore[index]
    elif join_next:
        runs[i] = (lblk, n + nxt[1], pblk, unwritten)  # type: ignore[index]
        starts[i] = lblk
    else:
        runs.insert(i, (lblk, n, pblk, unwritten))
        starts.insert(i, lblk)
    inode.blocks += n * (inode.sb.blocksize >> 9)
    _touch(inode, lblk, lblk + n)


def _holes(inode: Ext4Inode, start: int, end: int) -> list[tuple[int, int]]:
    """Unmapped ranges [a, b) within [start, end)."""
    out = []
    pos = start
    for ext in inode.extents(start, end):
        if ext.lblk > pos:
            out.append((pos, min(ext.lblk, end)))
        pos = max(pos, ext.lblk + ext.count)
        if pos >= end:
            break
    if pos < end:
        out.append((pos, end))
    return out


def _goal(inode: Ext4Inode, lblk: int) -> int:
    """Where to put logical block ``lblk``: after the run before it, or in the inode's group."""
    runs = inode.runs()
    i = bisect.bisect_right(inode._starts, lblk) - 1
    if i >= 0:
        s, _n, p, _u = runs[i]
        return p + lblk - s
    sb = inode.sb
    g = (inode.ino - 1) // sb.inodes_per_group
    return sb.group_first_block(g)


def allocate(inode: Ext4Inode, start: int, end: int, unwritten: bool) -> list[tuple[int, int, int]]:
    """Map every hole in [start, end); the new (lblk, count, pblk) runs.

    On ENOSPC what was allocated stays mapped and the error is raised only if
    nothing could be; callers check how far the mapping reaches.
    """
    sb = inode.sb
    if not inode.i_flags & EXT4_EXTENTS_FL:
        if end > sb.maxbytes_indirect // sb.blocksize:
            raise kerr(errno.EFBIG, f"ext4 inode {inode.ino}", "beyond the indirect map's reach")
    out: list[tuple[int, int, int]] = []
    for a, b in _holes(inode, start, end):
        while a < b:
            try:
                pblk, n = sb.alloc.alloc_blocks(_goal(inode, a), b - a)
            except OSError:
                if out:
                    return out
                raise
            _insert(inode, a, n, pblk, unwritten)
            out.append((a, n, pblk))
            a += n
    return out


def convert_written(inode: Ext4Inode, start: int, end: int) -> None:
    """Mark unwritten runs inside [start, end) written (their data is being written).

    In place, merging with the neighbours: random writes into a preallocated file cost
    a few list operations each, whatever the number of its extents."""
    runs = inode.runs()
    starts = inode._starts
    i, j = _window(inode, start, end)
    if not any(runs[k][3] for k in range(i, j)):
        return
    new: list[Run] = []
    for s, n, p, u in runs[i:j]:
        e = s + n
        if not u:
            new.append((s, n, p, u))
            continue
        if s < start:
            new.append((s, start - s, p, True))
        a, b = max(s, start), min(e, end)
        new.append((a, b - a, p + a - s, False))
        if e > end:
            new.append((end, e - end, p + end - s, True))
    lo, hi = max(i - 1, 0), min(j + 1, len(runs))
    merged = _merge(runs[lo:i] + new + runs[j:hi])
    runs[lo:hi] = merged
    starts[lo:hi] = [r[0] for r in merged]
    _touch(inode, start, end)


# -- storing the map --------------------------------------------------------------------------
def store_map(inode: Ext4Inode) -> None:
    """Write the changed block map to its tree (extents) or indirect blocks."""
    sb = inode.sb
    if inode.owed:  # what was held back for this store is free for anyone again
        sb.alloc.owed -= inode.owed
        inode.owed = 0
    if inode.map_lo >= inode.map_hi:
        return
    bs = sb.blocksize

    def alloc_meta(goal: int) -> int:
        return sb.alloc.alloc_blocks(goal, 1, metadata=True)[0]

    if inode.i_flags & EXT4_EXTENTS_FL:
        if inode.tblocks is None:
            inode.tblocks = tree_blocks(inode)
        old = inode.tblocks
        root, blocks = store_extents(inode, inode.runs(), old, alloc_meta)
        inode.blocks += (len(blocks) - len(old)) * (bs >> 9)
        inode.tblocks = blocks
        inode.i_block = root
    else:
        runs = inode.runs()
        starts = inode._starts

        def lookup(lb: int) -> int:
            i = bisect.bisect_right(starts, lb) - 1
            if i >= 0:
                s, n, p, _u = runs[i]
                if lb < s + n:
                    return p + lb - s
            return 0

        def any_mapped(a: int, b: int) -> bool:
            i = bisect.bisect_right(starts, a) - 1
            if i >= 0 and runs[i][0] + runs[i][1] > a:
                return True
            return i + 1 < len(runs) and runs[i + 1][0] < b

        delta = store_indirect(inode, lookup, any_mapped, inode.map_lo, inode.map_hi, alloc_meta)
        inode.blocks += delta * (bs >> 9)
    inode.map_lo, inode.map_hi = 1 << 62, 0


# -- data I/O ---------------------------------------------------------------------------------------
def write(inode: Ext4Inode, offset: int, data: bytes | bytearray | memoryview) -> int:
    """Write ``data`` at ``offset``; short on ENOSPC (ENOSPC if nothing fit)."""
    _uninline(inode)
    sb = inode.sb
    bs = sb.blocksize
    mv = memoryview(data).cast("B")
    end = offset + len(mv)
    first, last = offset // bs, (end + bs - 1) // bs
    old_size = inode.size
    if not offset % bs and offset >= old_size and first >= map_end(inode):
        return _write_fresh(inode, offset, mv, first, last)
    exts = list(inode.extents(first, last))
    # logical blocks with no old content: unwritten ones and the ones allocated now
    fresh = [(max(e.lblk, first), min(e.lblk + e.count, last)) for e in exts if e.unwritten]
    had_unwritten = bool(fresh)
    new = allocate(inode, first, last, False)
    if new:
        fresh.extend((a, a + n) for a, n, _p in new)
        exts = list(inode.extents(first, last))
    # how far the mapping reaches (ENOSPC may have stopped it)
    reach = first
    for ext in exts:
        if ext.lblk > reach:
            break
        reach = ext.lblk + ext.count
    reach = min(reach, last)
    if reach <= first:
        raise kerr(errno.ENOSPC, "ext4", "no free blocks")
    end = min(end, reach * bs)
    if old_size < offset and old_size % bs:
        zero_tail(inode, old_size)
    # build the block-aligned image of [first, reach) and write it mapped run by run
    head = offset - first * bs
    if head:
        buf = bytearray((reach - first) * bs)
        buf[head:head + end - offset] = mv[:end - offset]
    else:  # one copy, no zeroing of what the data covers
        buf = bytearray(mv[:end - offset])
        buf += bytes((reach - first) * bs - len(buf))
    for lb in {first, reach - 1}:
        lo = (lb - first) * bs
        covered_lo, covered_hi = max(offset, lb * bs), min(end, (lb + 1) * bs)
        if covered_lo == lb * bs and covered_hi == (lb + 1) * bs:
            continue
        if any(a <= lb < b for a, b in fresh):
            continue
        old = inode.read_block(lb)
        if covered_lo > lb * bs:
            buf[lo:covered_lo - first * bs] = old[:covered_lo - lb * bs]
        if covered_hi < (lb + 1) * bs:
            buf[covered_hi - first * bs:lo + bs] = old[covered_hi - lb * bs:]
    view = memoryview(buf)
    for ext in exts:
        s, e = max(ext.lblk, first), min(ext.lblk + ext.count, reach)
        if s >= e:
            break
        sb.queue_data(inode.ino, (ext.pblk + s - ext.lblk) * bs,
                      [view[(s - first) * bs:(e - first) * bs]], False)
    if had_unwritten:
        convert_written(inode, first, reach)
    if end > inode.size:
        inode.size = end
        sb.dirty_inode(inode)
    return end - offset


def _write_fresh(inode: Ext4Inode, offset: int, mv: memoryview, first: int, last: int) -> int:
    """``write`` at a block boundary at or past the end of the file and of its map (a new
    file, an append): every block is new, so there is nothing old to keep or convert; the
    blocks are written whole, zero-padded past the data."""
    sb = inode.sb
    bs = sb.blocksize
    if inode.size % bs and inode.size < offset:
        zero_tail(inode, inode.size)
    new = allocate(inode, first, last, False)
    if not new:
        raise kerr(errno.ENOSPC, "ext4", "no free blocks")
    reach = new[-1][0] + new[-1][1]  # ENOSPC may have stopped it early
    count = min(len(mv), (reach - first) * bs)
    whole = count - count % bs
    if type(mv.obj) is bytes:
        # the caller's bytes cannot change: the whole blocks go out from them as they are
        # (a write queued is done later), only the last, partial block is copied and padded
        body = mv[:whole]
    else:  # a buffer the caller may change once we return: copied now
        body = memoryview(bytes(mv[:whole]))
    tail = None
    if whole < count:
        pad = bytearray(bs)
        pad[:count - whole] = mv[whole:count]
        tail = memoryview(pad)
    for lblk, n, pblk in new:
        lo = (lblk - first) * bs
        hi = lo + n * bs
        parts = [body[lo:min(hi, whole)]] if lo < whole else []
        if hi > whole and tail is not None:
            parts.append(tail)  # (the tail is the last block: in the last extent)
        sb.queue_data(inode.ino, pblk * bs, parts, True)
    inode.size = offset + count
    sb.dirty_inode(inode)
    return count


def zero_tail(inode: Ext4Inode, size: int) -> None:
    """Zero the bytes of the block holding offset ``size`` that lie at and after it."""
    sb = inode.sb
    bs = sb.blocksize
    lb, within = divmod(size, bs)
    if not within:
        return
    _patch(inode, lb, within, bs)


def _patch(inode: Ext4Inode, lb: int, start: int, stop: int) -> None:
    """Zero bytes [start, stop) of logical block ``lb`` if it is mapped and written
    (the device takes whole sectors: the block is read, patched and written back)."""
    sb = inode.sb
    bs = sb.blocksize
    sb.flush_data()
    for ext in inode.extents(lb, lb + 1):
        if ext.unwritten or ext.lblk > lb:
            return
        where = (ext.pblk + lb - ext.lblk) * bs
        block = bytearray(sb.io.read(where, bs))
        block[start:stop] = bytes(stop - start)
        sb.io.write(where, block)


def truncate(inode: Ext4Inode, size: int) -> None:
    """Set the file size, freeing the blocks past the new end."""
    _uninline(inode)
    sb = inode.sb
    bs = sb.blocksize
    old = inode.size
    if size < old:
        zero_tail(inode, size)
        punch(inode, (size + bs - 1) // bs, max((old + bs - 1) // bs, map_end(inode)))
    elif size > old:
        zero_tail(inode, old)
    inode.size = size
    sb.dirty_inode(inode)


def map_end(inode: Ext4Inode) -> int:
    runs = inode.runs()
    return runs[-1][0] + runs[-1][1] if runs else 0


def fallocate(inode: Ext4Inode, mode: int, offset: int, length: int) -> None:
    """Preallocate (unwritten extents), punch a hole or zero a range."""
    _uninline(inode)
    sb = inode.sb
    bs = sb.blocksize
    end = offset + length
    if not inode.i_flags & EXT4_EXTENTS_FL and not mode & FALLOC_FL_PUNCH_HOLE:
        raise kerr(errno.EOPNOTSUPP, f"ext4 inode {inode.ino}",
                   "preallocation needs an extent-mapped file")
    if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
        stop = min(end, inode.size) if mode & FALLOC_FL_PUNCH_HOLE else end
        if stop > offset:
            a, b = (offset + bs - 1) // bs, stop // bs
            if a > b:  # inside one block
                _zero_bytes(inode, offset, stop)
            else:
                _zero_bytes(inode, offset, a * bs)
                _zero_bytes(inode, b * bs, stop)
                if b > a:
                    punch(inode, a, b)
                    if mode & FALLOC_FL_ZERO_RANGE:
                        allocate(inode, a, b, True)
                        if _holes(inode, a, b):
                            raise kerr(errno.ENOSPC, "ext4", "no free blocks")
        if mode & FALLOC_FL_PUNCH_HOLE:
            return
    else:
        first, last = offset // bs, (end + bs - 1) // bs
        allocate(inode, first, last, True)
        if _holes(inode, first, last):
            raise kerr(errno.ENOSPC, "ext4", "no free blocks")
    if not mode & FALLOC_FL_KEEP_SIZE and end > inode.size:
        zero_tail(inode, inode.size)
        inode.size = end
        sb.dirty_inode(inode)


def _zero_bytes(inode: Ext4Inode, start: int, stop: int) -> None:
    """Zero [start, stop) of written blocks in place (within one block or across a few)."""
    if stop <= start:
        return
    sb = inode.sb
    bs = sb.blocksize
    pos = start
    while pos < stop:
        lb = pos // bs
        e = min(stop, (lb + 1) * bs)
        _patch(inode, lb, pos - lb * bs, e - lb * bs)
        pos = e
