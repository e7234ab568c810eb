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


def read_mapped(inode: Inode, bdev: BlockDevice, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of ``inode`` from ``offset`` (short at end of file)."""
    size = min(size, inode.size - offset)
    if size <= 0:
        return b""
    bs = inode.sb.blocksize
    first = offset // bs
    last = (offset + size - 1) // bs + 1
    buf = bytearray((last - first) * bs)
    # runs of [device byte offset, start, end) in buf, merged when contiguous
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
    if runs:
        view = memoryview(buf)
        big = []
        for dev, lo, hi in runs:
            if hi - lo <= SMALL_READ:
                bdev.read_small(dev, view[lo:hi])  # served by readahead windows
            else:
                big.append((dev, [view[lo:hi]]))
        if big:
            bdev.submit_many(big)
    start = offset - first * bs
    if start == 0 and size == len(buf):
        return bytes(buf)
    return bytes(memoryview(buf)[start:start + size])
