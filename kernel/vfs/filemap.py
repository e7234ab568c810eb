"""Generic file reads through the block-mapping interface (mm/filemap.c's role).

A driver that maps logical blocks to device blocks (``Inode.extents``) gets
reads for free: holes and unwritten extents read as zeros, and every mapped
run of the requested range goes to the device in one batch of multi-segment
requests, around the buffer cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..block.blkdev import BlockDevice
    from .inode import Inode


SMALL_READ = 32 * 1024  # runs up to this size go through the disk's readahead windows


_ZEROS = bytes(1 << 20)
_SMALL_INTO = 64 * 1024  # read_mapped_into copies reads up to this size (one request, not two)


def zero_fill(dest: memoryview, lo: int, hi: int) -> None:
    """Zero ``dest[lo:hi]`` (holes in a caller's buffer, which may hold anything)."""
    while lo < hi:
        n = min(hi - lo, len(_ZEROS))
        dest[lo:lo + n] = _ZEROS[:n]
        lo += n


def _fill(inode: Inode, bdev: BlockDevice, first: int, dest: memoryview, zeroed: bool) -> None:
    """Fill ``dest`` (whole blocks) with the file's blocks from ``first``; holes and unwritten
    extents become zeros (``zeroed``: ``dest`` holds zeros already)."""
    bs = inode.sb.blocksize
    last = first + len(dest) // bs
    # runs of [device byte offset, start, end) in dest, merged when contiguous
    runs: list[list[int]] = []
    for ext in inode.extents(first, last):
        s = max(ext.lblk, first)
        e = min(ext.lblk + ext.count, last)
        if s >= e or ext.unwritten:
            continue
        dev = (ext.pblk + s - ext.lblk) * bs
        lo, hi = (s - first) * bs, (e - first) * bs
        if runs and runs[-1][2] == lo and runs[-1][0] + (runs[-1][2] - runs[-1][1]) == dev:
            runs[-1][2] = hi
        else:
            runs.append([dev, lo, hi])
    if not zeroed:
        pos = 0
        for _dev, lo, hi in [*runs, [0, len(dest), len(dest)]]:
            zero_fill(dest, pos, lo)  # a hole before this run
            pos = max(pos, hi)
    big = []
    for dev, lo, hi in runs:
        if hi - lo <= SMALL_READ:
            bdev.read_small(dev, dest[lo:hi])  # served by readahead windows
        else:
            big.append((dev, [dest[lo:hi]]))
    if big:
        bdev.submit_many(big)


def _read_one_run(inode: Inode, bdev: BlockDevice, offset: int, dest: memoryview) -> bool:
    """The common small read: when one written extent maps all of ``dest``'s range, copy
    it straight out of a readahead window (True); else leave it to the general path."""
    bs = inode.sb.blocksize
    first = offset // bs
    pblk = inode.mapped_run(first, (offset + len(dest) - 1) // bs + 1)
    if pblk < 0:
        return False
    bdev.read_small(pblk * bs + offset - first * bs, dest)
    return True


def read_mapped(inode: Inode, bdev: BlockDevice, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of ``inode`` from ``offset`` (short at end of file)."""
    size = min(size, inode.size - offset)
    if size <= 0:
        return b""
    bs = inode.sb.blocksize
    first = offset // bs
    last = (offset + size - 1) // bs + 1
    if size <= SMALL_READ:
        out = bytearray(size)
        if _read_one_run(inode, bdev, offset, memoryview(out)):
            return bytes(out)
    buf = bytearray((last - first) * bs)
    _fill(inode, bdev, first, memoryview(buf), True)
    start = offset - first * bs
    if start == 0 and size == len(buf):
        return bytes(buf)
    return bytes(memoryview(buf)[start:start + size])


def read_mapped_into(inode: Inode, bdev: BlockDevice, offset: int, dest: memoryview) -> int:
    """Read into ``dest`` from ``offset``; the number of bytes (short at end of file).

    Whole blocks go straight into ``dest``, without a copy in between."""
    size = min(len(dest), inode.size - offset)
    if size <= 0:
        return 0
    bs = inode.sb.blocksize
    if size <= SMALL_READ and _read_one_run(inode, bdev, offset, dest[:size]):
        return size
    if offset % bs or size <= _SMALL_INTO:
        # small or unaligned: one read of whole blocks, then a copy
        data = read_mapped(inode, bdev, offset, size)
        dest[:len(data)] = data
        return len(data)
    full = size // bs * bs
    if full:
        _fill(inode, bdev, offset // bs, dest[:full], False)
    if size > full:  # the last, partial block
        dest[full:size] = read_mapped(inode, bdev, offset + full, size - full)
    return size
