"""The block layer: disks, block devices (whole disks and partitions), bios.

A ``GenDisk`` is what a block driver registers (Linux's gendisk with its
request queue). A ``BlockDevice`` is what a filesystem mounts: a whole disk or
one partition of it, with byte-addressed ``readv``/``writev``/``flush``/
``discard`` that split I/O into bios within the disk's queue limits and hand
the whole batch to the driver at once, so the device can overlap them.

Writes and flushes may also be issued behind (``wait=False``): a thread of the
disk performs them in the order they were issued while the caller goes on, as
Linux's writeback and jbd2's commit thread do. Every other request of the disk
first waits for them, so what the disk holds is always what the same requests
made synchronously would have left; a failure is reported at the next request
or ``drain`` (and at every one after: the disk stays failed, as an aborted
journal does).

The block layer knows nothing of virtio.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import OrderedDict, deque
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

    def __init__(self, op: int, sector: int, segs: list[Buf] | None = None,
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

    _behind: WriteBehind | None = None

    def submit(self, bios: Sequence[Bio]) -> None:  # pragma: no cover - abstract
        """Perform every bio; raise EIO (naming the sector) if any fails."""
        raise NotImplementedError

    def get_id(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def submit_behind(self, bios: Sequence[Bio]) -> None:
        """Perform ``bios`` in the background, after every batch issued behind before them;
        their buffers must not change until then."""
        wb = self._behind
        if wb is None:
            wb = self._behind = WriteBehind(self)
        wb.put(bios)

    def drain(self, check: bool = True) -> None:
        """Wait for the requests issued behind; EIO if one of them (ever) failed (unless
        not ``check``)."""
        wb = self._behind
        if wb is not None:
            wb.wait(check)

    def shutdown(self) -> None:
        """Stop the write-behind thread once it is idle (errors were reported by then)."""
        wb = self._behind
        if wb is not None:
            self._behind = None
            wb.stop()

    def after_fork_in_child(self) -> None:
        # the thread stayed in the parent, which was idle at the fork (Kernel drains first)
        self._behind = None


BEHIND_BYTES = 64 << 20  # issued behind and not done yet: more waits (bounded memory)


class _Batch:
    """Bios issued behind together, and the sectors they change."""

    __slots__ = ("bios", "size", "spans", "lo", "hi")

    def __init__(self, bios: Sequence[Bio]) -> None:
        self.bios = bios
        self.spans = [(b.sector, b.sector + b.nr_sectors) for b in bios
                      if b.op != REQ_OP_READ and b.nr_sectors]
        self.size = sum(hi - lo for lo, hi in self.spans) << SECTOR_SHIFT
        self.lo = min((lo for lo, _hi in self.spans), default=0)
        self.hi = max((hi for _lo, hi in self.spans), default=0)

    def overlaps(self, lo: int, hi: int) -> bool:
        return lo < self.hi and self.lo < hi and any(lo < e and s < hi for s, e in self.spans)


class WriteBehind:
    """A disk's background writer: batches of bios, one at a time, in issue order.

    The batch being performed stays at the head of ``pending`` until it is done.
    """

    def __init__(self, disk: GenDisk) -> None:
        self.disk = disk
        self.cond = threading.Condition(threading.Lock())
        self.pending: deque[_Batch] = deque()
        self.bytes = 0  # written by the pending batches
        self.error: OSError | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, name=f"{disk.name}-writeback",
                                       daemon=True)
        self.thread.start()

    def put(self, bios: Sequence[Bio]) -> None:
        batch = _Batch(bios)
        with self.cond:
            while self.bytes > BEHIND_BYTES and self.error is None:
                self.cond.wait()
            self._check()
            self.pending.append(batch)
            self.bytes += batch.size
            self.cond.notify_all()

    def wait(self, check: bool = True) -> None:
        """Until every pending batch is done."""
        if self.pending or self.error is not None:
            with self.cond:
                while self.pending:
                    self.cond.wait()
                if check:
                    self._check()

    def wait_reads(self, bios: Sequence[Bio]) -> None:
        """Until no pending batch writes a sector these reads read (a read may pass
        writes elsewhere, as reads of other pages pass writeback in Linux)."""
        if not self.pending and self.error is None:
            return
        spans = [(b.sector, b.sector + b.nr_sectors) for b in bios]
        with self.cond:
            while any(batch.overlaps(lo, hi) for batch in self.pending for lo, hi in spans):
                self.cond.wait()
            self._check()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join()

    def _check(self) -> None:
        if self.error is not None:
            e = self.error
            code = e.errno or errno.EIO
            why = e.strerror or str(e)
            generic = os.strerror(code)
            if why.startswith(generic + " (") and why.endswith(")"):
                why = why[len(generic) + 2:-1]
            raise kerr(code, f"/dev/{self.disk.name}", f"a write issued earlier failed: {why}")

    def _serve(self) -> None:
        cond = self.cond
        while True:
            with cond:
                while not self.pending:
                    if self.stopping:
                        return
                    cond.wait()
                batch = self.pending[0]
            try:
                self.disk.submit(batch.bios)
            except BaseException as e:  # nothing issued after a failed batch is performed
                with cond:
                    self.error = e if isinstance(e, OSError) else \
                        OSError(errno.EIO, f"{type(e).__name__}: {e}")
                    self.pending.clear()
                    self.bytes = 0
                    cond.notify_all()
                continue
            with cond:
                self.pending.popleft()
                self.bytes -= batch.size
                cond.notify_all()


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
        max_segs = lim.max_segments
        sector = (self._base + offset) >> SECTOR_SHIFT
        if len(bufs) <= max_segs:
            lens = list(map(len, bufs))
            total = sum(lens)
            if total <= max_bytes and max(lens, default=0) <= max_seg:
                # (the common case: one bio of the buffers as they are)
                return [Bio(op, sector, list(bufs), total >> SECTOR_SHIFT)] if total else []
        bios: list[Bio] = []
        cur: list[Buf] = []
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
                if cur_bytes == max_bytes or len(cur) == max_segs:
                    bios.append(Bio(op, start, cur, cur_bytes >> SECTOR_SHIFT))
                    start += cur_bytes >> SECTOR_SHIFT
                    cur, cur_bytes = [], 0
        if cur:
            bios.append(Bio(op, start, cur, cur_bytes >> SECTOR_SHIFT))
        return bios

    def _submit(self, bios: Sequence[Bio], wait: bool = True) -> None:
        disk = self.disk
        if not wait:
            disk.submit_behind(bios)
            return
        wb = disk._behind
        if wb is not None:
            if all(b.op == REQ_OP_READ for b in bios):
                wb.wait_reads(bios)
            else:  # a write or flush follows everything issued before it
                wb.wait()
        disk.submit(bios)

    def drain(self) -> None:
        """Wait for this disk's writes issued behind (see the module's description)."""
        self.disk.drain()

    # -- I/O ------------------------------------------------------------------
    def readv(self, offset: int, bufs: Sequence[Buf]) -> None:
        """Fill ``bufs`` (in order) from ``offset``; one batch of requests."""
        self._check(offset, sum(len(b) for b in bufs), False)
        self._submit(self._bios(REQ_OP_READ, offset, bufs))

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
        self._submit(self._bios_abs(REQ_OP_READ, disk_offset, [buf]))
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
        self._submit(self._bios(REQ_OP_WRITE, offset, bufs))

    def write(self, offset: int, data: Buf | bytes) -> None:
        if len(data):
            self.writev(offset, [data if not isinstance(data, bytes) else memoryview(data)])

    def write_many(self, writes: Sequence[tuple[int, Sequence[Buf]]], wait: bool = True) -> None:
        """Several writes to distinct ranges as one batch (they may complete in any order:
        callers never put two writes of the same sectors in one batch). Writes that meet
        end to end are merged into one request (as the block layer merges a plug's bios):
        the small files a copy lays out one after another go to the disk together.
        ``wait=False``: issued behind (the buffers must not change until done)."""
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
            self._submit(bios, wait)

    def submit_many(self, reads: Sequence[tuple[int, Sequence[Buf]]]) -> None:
        """Several independent reads as one batch (they may complete in any order)."""
        bios: list[Bio] = []
        for offset, bufs in reads:
            self._check(offset, sum(len(b) for b in bufs), False)
            bios.extend(self._bios(REQ_OP_READ, offset, bufs))
        if bios:
            self._submit(bios)

    def flush(self, wait: bool = True) -> None:
        """Make every completed write durable (REQ_PREFLUSH; a no-op without a cache).
        ``wait=False``: issued behind, durable once done."""
        if self.ro or not self.disk.limits.flush:
            return
        self._submit([Bio(REQ_OP_FLUSH, 0)], wait)

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
        self._submit(bios)
