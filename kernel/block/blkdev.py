"""The block layer: disks, block devices (whole disks and partitions), bios.

A ``GenDisk`` is what a block driver registers (Linux's gendisk with its
request queue). A ``BlockDevice`` is what a filesystem mounts: a whole disk or
one partition of it, with byte-addressed ``readv``/``writev``/``flush``/
``discard`` that split I/O into bios within the disk's queue limits and hand
the whole batch to the driver at once, so the device can overlap them.

The block layer knows nothing of virtio.
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter

from ..errors import kerr

log = logging.getLogger(__name__)

SECTOR_SIZE = 512
SECTOR_SHIFT = 9

REQ_OP_READ = 0
REQ_OP_WRITE = 1
REQ_OP_FLUSH = 2
REQ_OP_DISCARD = 3
REQ_OP_WRITE_ZEROES = 5

VIRTBLK_MAJOR = 254  # Linux gives virtio-blk a dynamic major; LKL's is 254
BLOCK_EXT_MAJOR = 259  # partitions beyond the disk's minor range
DISK_MINORS = 16

Buf = bytearray | memoryview


class Bio:
    """One block I/O: an operation on a sector range and its memory segments."""

    __slots__ = ("op", "sector", "segs", "nr_sectors", "unmap")

    def __init__(self, op: int, sector: int, segs: list[memoryview] | None = None,
                 nr_sectors: int = 0, unmap: bool = False) -> None:
        self.op = op
        self.sector = sector
        self.segs = segs or []
        self.nr_sectors = nr_sectors or sum(len(s) for s in self.segs) >> SECTOR_SHIFT
        self.unmap = unmap

    def __repr__(self) -> str:
        return f"<Bio op={self.op} sector={self.sector} n={self.nr_sectors} segs={len(self.segs)}>"


@dataclass
class QueueLimits:
    logical_block_size: int = SECTOR_SIZE
    max_segments: int = 128
    max_segment_size: int = 1 << 20
    max_sectors: int = 2048  # bytes per request = max_sectors * 512
    max_discard_sectors: int = 0
    max_write_zeroes_sectors: int = 0
    flush: bool = False


RA_WINDOW = 128 * 1024  # readahead window for small reads
RA_WINDOWS = 64  # windows kept per disk (8 MiB)
SMALL_CACHED = 64 * 1024  # read_cached: reads up to this size of a read-only disk


class ReadCache:
    """Recently read 128 KiB windows of a disk, for small reads (readahead).

    A small file costs one virtio request of the same price whether it
    moves 4 KiB or 128 KiB, and files written together sit together on
    disk; so a small read fetches its whole window and the neighbours'
    reads are served from memory. Writes to the disk drop the windows they
    touch, so the cache is never stale.
    """

    def __init__(self, limit: int = RA_WINDOWS) -> None:
        self.windows: OrderedDict[int, bytearray] = OrderedDict()  # never changed once read
        self.limit = limit
        self.hits = 0
        self.misses = 0

    def invalidate(self, offset: int, length: int) -> None:
        if not self.windows or length <= 0:
            return
        first, last = offset // RA_WINDOW, (offset + length - 1) // RA_WINDOW
        if last - first > len(self.windows):
            for idx in [i for i in self.windows if first <= i <= last]:
                del self.windows[idx]
        else:
            for idx in range(first, last + 1):
                self.windows.pop(idx, None)


class GenDisk:
    """A disk registered by a block driver."""

    name: str
    major: int
    first_minor: int
    capacity: int  # in 512-byte sectors
    ro: bool
    limits: QueueLimits
    _ra: ReadCache | None = None

    @property
    def ra(self) -> ReadCache:
        if self._ra is None:
            self._ra = ReadCache()
        return self._ra

    def submit(self, bios: Sequence[Bio]) -> None:  # pragma: no cover - abstract
        """Perform every bio; raise EIO (naming the sector) if any fails."""
        raise NotImplementedError

    def get_id(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


class BlockDevice:
    """A whole disk (``partno`` 0) or one partition of it, byte-addressed.

    All offsets are relative to the start of this device. I/O outside it
    fails with EIO, as Linux's "attempt to access beyond end of device".
    """

    def __init__(self, disk: GenDisk, partno: int = 0, start_sect: int = 0,
                 nr_sects: int | None = None, name: str | None = None, dev: int = 0) -> None:
        self.disk = disk
        self.partno = partno
        self.start_sect = start_sect
        self.nr_sects = disk.capacity - start_sect if nr_sects is None else nr_sects
        self.size = self.nr_sects * SECTOR_SIZE
        self.name = name or (disk.name if partno == 0 else f"{disk.name}{partno}")
        self.dev = dev
        self.ro = disk.ro
        self.holder: object | None = None  # the superblock that has it mounted
        self._base = start_sect * SECTOR_SIZE

    def __repr__(self) -> str:
        return f"<BlockDevice {self.name} {self.size} bytes{' ro' if self.ro else ''}>"

    # -- helpers --------------------------------------------------------------
    def _check(self, offset: int, length: int, write: bool) -> None:
        if write and self.ro:
            raise kerr(errno.EROFS, f"/dev/{self.name}", "read-only block device")
        if offset < 0 or offset + length > self.size:
            raise kerr(errno.EIO, f"/dev/{self.name}",
                       f"access beyond end of device: offset {offset} length {length}, "
                       f"device size {self.size}")
        if (offset | length) & (SECTOR_SIZE - 1):
            raise kerr(errno.EINVAL, f"/dev/{self.name}", "unaligned block I/O")

    def _bios(self, op: int, offset: int, bufs: Sequence[Buf]) -> list[Bio]:
        lim = self.disk.limits
        max_seg = lim.max_segment_size
        max_bytes = lim.max_sectors * SECTOR_SIZE
        bios: list[Bio] = []
        sector = (self._base + offset) >> SECTOR_SHIFT
        cur: list[memoryview] = []
        cur_bytes = 0
        start = sector
        for buf in bufs:
            mv = buf if isinstance(buf, memoryview) else memoryview(buf)
            pos, n = 0, len(mv)
            while pos < n:
                take = min(n - pos, max_seg, max_bytes - cur_bytes)
                cur.append(mv[pos:pos + take])
                cur_bytes += take
                pos += take
                if cur_bytes == max_bytes or len(cur) == lim.max_segments:
                    bios.append(Bio(op, start, cur, cur_bytes >> SECTOR_SHIFT))
                    start += cur_bytes >> SECTOR_SHIFT
                    cur, cur_bytes = [], 0
        if cur:
            bios.append(Bio(op, start, cur, cur_bytes >> SECTOR_SHIFT))
        return bios

    # -- I/O ------------------------------------------------------------------
    def readv(self, offset: int, bufs: Sequence[Buf]) -> None:
        """Fill ``bufs`` (in order) from ``offset``; one batch of requests."""
        self._check(offset, sum(len(b) for b in bufs), False)
        self.disk.submit(self._bios(REQ_OP_READ, offset, bufs))

    def read(self, offset: int, length: int) -> bytearray:
        buf = bytearray(length)
        if length:
            self.readv(offset, [buf])
        return buf

    def reads_cached(self, length: int) -> bool:
        """Whether ``read_cached`` serves a read of ``length`` bytes from the windows."""
        return self.ro and length <= SMALL_CACHED

    def read_cached(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from ``offset``: a small read of a read-only disk through its
        readahead windows (the blocks around it come with it), anything else as one
        request. For metadata and small file data of read-only filesystems."""
        if self.reads_cached(len(buf)):
            self.read_small(offset, buf)
        else:
            self.readv(offset, [buf])

    def read_small(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from ``offset`` through the disk's readahead windows.

        For small reads of file data: one request brings a whole window. Any byte range
        of the device may be read (the windows are whole sectors).
        """
        n = len(buf)
        if offset < 0 or offset + n > self.size:
            self._check(offset, n, False)  # raises EIO, naming the device
        ra = self.disk.ra
        windows = ra.windows
        base = self._base
        disk_size = self.disk.capacity * SECTOR_SIZE
        pos = base + offset
        end = pos + n
        out = 0
        while pos < end:
            idx = pos // RA_WINDOW
            data = windows.get(idx)
            if data is None:
                ra.misses += 1
                start = idx * RA_WINDOW
                data = self._read_disk(start, min(RA_WINDOW, disk_size - start))
                windows[idx] = data
                if len(windows) > ra.limit:
                    windows.popitem(last=False)
            else:
                ra.hits += 1
                windows.move_to_end(idx)
            s = pos - idx * RA_WINDOW
            take = min(end - pos, len(data) - s)
            if take == n:  # the whole read in one window: one copy, no loop state
                buf[:] = memoryview(data)[s:s + n]
                return
            buf[out:out + take] = memoryview(data)[s:s + take]
            out += take
            pos += take

    def _read_disk(self, disk_offset: int, length: int) -> bytearray:
        """Read at an offset from the start of the disk (not of this partition)."""
        buf = bytearray(length)
        self.disk.submit(self._bios_abs(REQ_OP_READ, disk_offset, [buf]))
        return buf

    def _bios_abs(self, op: int, disk_offset: int, bufs: Sequence[Buf]) -> list[Bio]:
        saved = self._base
        self._base = 0
        try:
            return self._bios(op, disk_offset, bufs)
        finally:
            self._base = saved

    def writev(self, offset: int, bufs: Sequence[Buf]) -> None:
        length = sum(len(b) for b in bufs)
        self._check(offset, length, True)
        self.disk.ra.invalidate(self._base + offset, length)
        self.disk.submit(self._bios(REQ_OP_WRITE, offset, bufs))

    def write(self, offset: int, data: Buf | bytes) -> None:
        if len(data):
            self.writev(offset, [data if not isinstance(data, bytes) else memoryview(data)])

    def write_many(self, writes: Sequence[tuple[int, Sequence[Buf]]]) -> None:
        """Several writes to distinct ranges as one batch (they may complete in any order:
        callers never put two writes of the same sectors in one batch). Writes that meet
        end to end are merged into one request (as the block layer merges a plug's bios):
        the small files a copy lays out one after another go to the disk together."""
        spans: list[tuple[int, int, Sequence[Buf]]] = []
        for offset, bufs in writes:
            length = sum(len(b) for b in bufs)
            self._check(offset, length, True)
            spans.append((offset, length, bufs))
        spans.sort(key=itemgetter(0))
        bios: list[Bio] = []
        invalidate = self.disk.ra.invalidate
        i, n = 0, len(spans)
        while i < n:
            offset, length, bufs = spans[i]
            end = offset + length
            segs = list(bufs)
            i += 1
            while i < n and spans[i][0] == end:
                segs.extend(spans[i][2])
                end += spans[i][1]
                i += 1
            if i < n and spans[i][0] < end:  # a caller's bug: which one lands is up to chance
                raise AssertionError(f"write_many: writes at {spans[i][0]} and before "
                                     f"{end} overlap in one batch")
            invalidate(self._base + offset, end - offset)
            bios.extend(self._bios(REQ_OP_WRITE, offset, segs))
        if bios:
            self.disk.submit(bios)

    def submit_many(self, reads: Sequence[tuple[int, Sequence[Buf]]]) -> None:
        """Several independent reads as one batch (they may complete in any order)."""
        bios: list[Bio] = []
        for offset, bufs in reads:
            self._check(offset, sum(len(b) for b in bufs), False)
            bios.extend(self._bios(REQ_OP_READ, offset, bufs))
        if bios:
            self.disk.submit(bios)

    def flush(self) -> None:
        """Make every completed write durable (REQ_PREFLUSH; a no-op without a cache)."""
        if self.ro or not self.disk.limits.flush:
            return
        self.disk.submit([Bio(REQ_OP_FLUSH, 0)])

    def discard(self, offset: int, length: int) -> None:
        """Tell the device the range is unused (it may read back as anything)."""
        self._ranged(REQ_OP_DISCARD, offset, length, self.disk.limits.max_discard_sectors, False)

    def zeroout(self, offset: int, length: int, unmap: bool = True) -> None:
        """Make the range read as zeros, without sending zeros when the device can."""
        lim = self.disk.limits.max_write_zeroes_sectors
        if not lim:
            zeros = bytes(min(length, 1 << 20))
            pos = 0
            while pos < length:
                n = min(len(zeros), length - pos)
                self.write(offset + pos, memoryview(zeros)[:n])
                pos += n
            return
        self._ranged(REQ_OP_WRITE_ZEROES, offset, length, lim, unmap)

    def _ranged(self, op: int, offset: int, length: int, max_sectors: int, unmap: bool) -> None:
        self._check(offset, length, True)
        self.disk.ra.invalidate(self._base + offset, length)
        if not max_sectors or not length:
            return
        sector = (self._base + offset) >> SECTOR_SHIFT
        left = length >> SECTOR_SHIFT
        bios = []
        while left:
            n = min(left, max_sectors)
            bios.append(Bio(op, sector, nr_sectors=n, unmap=unmap))
            sector += n
            left -= n
        self.disk.submit(bios)
