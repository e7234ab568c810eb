"""The buffer cache: filesystem metadata blocks, bounded in size.

Buffers are keyed by (block device, byte offset) and hold a ``bytearray`` of
the block. The cache keeps at most ``budget`` bytes (LKL's ``mb=``): the least
recently used clean buffer that nobody holds is evicted first; when dirty
buffers crowd the budget they are written back, in offset order, merged into
multi-segment requests.

A buffer a filesystem still references (a journal transaction, an inode being
modified) is never evicted, so there is only ever one copy of a block in
memory. Filesystems call ``forget`` when they free a metadata block, so a
stale copy never shadows data later written around the cache.

Reads of file data go around the cache (``BlockDevice.readv``): the cache is
for metadata, as ext4's buffer heads are.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from .blkdev import BlockDevice

log = logging.getLogger(__name__)


class Buffer:
    """One cached block. ``data`` is mutable; call ``mark_dirty`` after changing it."""

    __slots__ = ("bdev", "blocknr", "size", "data", "dirty", "private")

    def __init__(self, bdev: BlockDevice, blocknr: int, size: int, data: bytearray) -> None:
        self.bdev = bdev
        self.blocknr = blocknr
        self.size = size
        self.data = data
        self.dirty = False
        self.private: object = None  # for the filesystem (journal state, verified flag...)

    @property
    def offset(self) -> int:
        return self.blocknr * self.size

    def __repr__(self) -> str:
        return f"<Buffer {self.bdev.name}:{self.blocknr}x{self.size}{' dirty' if self.dirty else ''}>"


Key = tuple[BlockDevice, int]


def _select(items: Iterable[tuple[Key, Buffer]], idle: int, need: int
            ) -> tuple[list[Key], list[Buffer]]:
    """Buffers nobody but the cache holds (at most ``idle`` references to a clean one,
    as ``sys.getrefcount`` counts them here), oldest first, until ``need`` bytes."""
    victims: list[Key] = []
    dirty: list[Buffer] = []
    freed = 0
    for key, buf in items:
        if freed >= need:
            break
        if sys.getrefcount(buf) > idle + (1 if buf.dirty else 0):
            continue  # somebody holds it
        if buf.dirty:
            dirty.append(buf)
        victims.append(key)
        freed += buf.size
    return victims, dirty


_idle_refs = 0


def _refs_when_idle(bdev: BlockDevice) -> int:
    """The references ``_select`` sees on a buffer only the cache holds: found by running
    it on one (how many there are depends on the interpreter, and differs when compiled)."""
    probe: OrderedDict[Key, Buffer] = OrderedDict()
    probe[(bdev, -1)] = Buffer(bdev, -1, 1, bytearray(1))
    for idle in range(1, 64):
        if _select(probe.items(), idle, 1)[0]:
            return idle
    raise AssertionError("sys.getrefcount: no count means idle")


class BlockCache(Protocol):
    """What a filesystem uses of the buffer cache: ``BufferCache`` itself, or a view of
    it that journals what the filesystem dirties (ext4's ``JournalingCache``)."""

    def bread(self, bdev: BlockDevice, blocknr: int, size: int) -> Buffer: ...
    def bread_many(self, bdev: BlockDevice, blocknr: int, count: int, size: int
                   ) -> list[Buffer]: ...
    def getblk(self, bdev: BlockDevice, blocknr: int, size: int) -> Buffer: ...
    def peek(self, bdev: BlockDevice, blocknr: int, size: int) -> Buffer | None: ...
    def mark_dirty(self, buf: Buffer) -> None: ...
    def forget(self, bdev: BlockDevice, blocknr: int, size: int) -> None: ...
    def dirty_buffers(self, bdev: BlockDevice | None = None) -> list[Buffer]: ...
    def sync(self, bdev: BlockDevice | None = None, flush: bool = True) -> None: ...
    def invalidate(self, bdev: BlockDevice) -> None: ...


class BufferCache:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self._map: OrderedDict[Key, Buffer] = OrderedDict()
        self._dirty: dict[Key, Buffer] = {}
        self.hits = 0
        self.misses = 0

    # -- lookup -----------------------------------------------------------------
    def _lookup(self, bdev: BlockDevice, offset: int, size: int) -> Buffer | None:
        key = (bdev, offset)
        buf = self._map.get(key)
        if buf is None:
            return None
        if buf.size != size:
            # The same location read at another block size: write the old
            # copy back and start over, so a single copy exists.
            if buf.dirty:
                self._write([buf])
            self._drop(key, buf)
            return None
        self._map.move_to_end(key)
        self.hits += 1
        return buf

    def _insert(self, buf: Buffer) -> None:
        self._map[(buf.bdev, buf.blocknr * buf.size)] = buf
        self.bytes += buf.size
        if self.bytes > self.budget:
            self._shrink()

    def _drop(self, key: Key, buf: Buffer) -> None:
        del self._map[key]
        self._dirty.pop(key, None)
        self.bytes -= buf.size

    def bread(self, bdev: BlockDevice, blocknr: int, size: int) -> Buffer:
        """The block, read from the device on a miss (EIO if that fails)."""
        buf = self._lookup(bdev, blocknr * size, size)
        if buf is not None:
            return buf
        self.misses += 1
        data = bytearray(size)
        # a read-only disk: through its readahead windows, where the blocks around it (a
        # directory's files, the next inodes) come with it
        bdev.read_cached(blocknr * size, memoryview(data))
        buf = Buffer(bdev, blocknr, size, data)
        self._insert(buf)
        return buf

    def bread_many(self, bdev: BlockDevice, blocknr: int, count: int, size: int) -> list[Buffer]:
        """``count`` consecutive blocks; the missing ones in one batch of requests.

        Consecutive misses become one multi-segment request, so reading an
        inode table chunk or a directory costs one round trip.
        """
        out: list[Buffer | None] = []
        runs: list[tuple[int, list[Buffer]]] = []
        run: list[Buffer] = []
        for i in range(count):
            nr = blocknr + i
            buf = self._lookup(bdev, nr * size, size)
            if buf is None:
                self.misses += 1
                buf = Buffer(bdev, nr, size, bytearray(size))
                if run and run[-1].blocknr != nr - 1:
                    runs.append((run[0].offset, run))
                    run = []
                run.append(buf)
            out.append(buf)
        if run:
            runs.append((run[0].offset, run))
        if not runs:
            return out  # type: ignore[return-value]
        if bdev.reads_cached(size):  # block by block: most come out of one window
            for _off, bufs in runs:
                for b in bufs:
                    bdev.read_small(b.offset, memoryview(b.data))
        else:
            bdev.submit_many([(off, [b.data for b in bufs]) for off, bufs in runs])
        for _off, bufs in runs:
            for b in bufs:
                self._insert(b)
        return out  # type: ignore[return-value]

    def getblk(self, bdev: BlockDevice, blocknr: int, size: int) -> Buffer:
        """The block's buffer without reading it: zeros unless already cached.

        For blocks about to be overwritten entirely (a newly allocated block).
        """
        buf = self._lookup(bdev, blocknr * size, size)
        if buf is None:
            buf = Buffer(bdev, blocknr, size, bytearray(size))
            self._insert(buf)
        return buf

    def peek(self, bdev: BlockDevice, blocknr: int, size: int) -> Buffer | None:
        """The cached buffer if there is one; never reads."""
        return self._map.get((bdev, blocknr * size))

    # -- dirty state and writeback -------------------------------------------------
    def mark_dirty(self, buf: Buffer) -> None:
        key = (buf.bdev, buf.blocknr * buf.size)
        if self._map.get(key) is not buf:
            # Evicted while its owner held it (it cannot be, but be safe) or
            # replaced: put this copy back as the one copy.
            old = self._map.get(key)
            if old is not None:
                self._drop(key, old)
            self._insert(buf)
        buf.dirty = True
        self._dirty[key] = buf

    def write_now(self, buf: Buffer) -> None:
        """Write one buffer synchronously (it stays cached, clean)."""
        self._write([buf])

    def clean(self, bdev: BlockDevice, blocknr: int, size: int) -> None:
        """The block's cached content was written by someone else (a journal checkpoint):
        no need to write it back."""
        buf = self._dirty.pop((bdev, blocknr * size), None)
        if buf is not None:
            buf.dirty = False

    def forget(self, bdev: BlockDevice, blocknr: int, size: int) -> None:
        """Drop a block without writing it (Linux's bforget): it was freed."""
        key = (bdev, blocknr * size)
        buf = self._map.get(key)
        if buf is not None:
            buf.dirty = False
            self._drop(key, buf)

    def dirty_buffers(self, bdev: BlockDevice | None = None) -> list[Buffer]:
        return [b for (d, _o), b in self._dirty.items() if bdev is None or d is bdev]

    def sync(self, bdev: BlockDevice | None = None, flush: bool = True) -> None:
        """Write back every dirty buffer (of ``bdev``), then flush the device cache."""
        bufs = self.dirty_buffers(bdev)
        if bufs:
            self._write(bufs)
        if flush:
            for dev in {b.bdev for b in bufs} | ({bdev} if bdev is not None else set()):
                dev.flush()

    def _write(self, bufs: Iterable[Buffer]) -> None:
        """Write buffers in offset order, contiguous ones merged into one request."""
        by_dev: dict[BlockDevice, list[Buffer]] = {}
        for b in bufs:
            by_dev.setdefault(b.bdev, []).append(b)
        for dev, lst in by_dev.items():
            lst.sort(key=lambda b: b.blocknr * b.size)
            run: list[Buffer] = []
            end = -1
            for b in lst:
                off = b.blocknr * b.size
                if run and off != end:
                    dev.writev(run[0].offset, [r.data for r in run])
                    run = []
                run.append(b)
                end = off + b.size
            if run:
                dev.writev(run[0].offset, [r.data for r in run])
            for b in lst:
                b.dirty = False
                self._dirty.pop((dev, b.blocknr * b.size), None)

    def invalidate(self, bdev: BlockDevice) -> None:
        """Forget every buffer of ``bdev`` (after a sync, on unmount)."""
        for key in [k for k in self._map if k[0] is bdev]:
            self._drop(key, self._map[key])

    # -- eviction ---------------------------------------------------------------
    def _shrink(self) -> None:
        global _idle_refs
        target = self.budget * 7 // 8
        if not _idle_refs and self._map:
            _idle_refs = _refs_when_idle(next(iter(self._map))[0])
        victims, dirty = _select(self._map.items(), _idle_refs, self.bytes - target)
        if dirty:
            self._write(dirty)
        for key in victims:
            victim = self._map.get(key)
            if victim is not None and not victim.dirty:
                self._drop(key, victim)

    def stats(self) -> dict[str, int]:
        return {"bytes": self.bytes, "buffers": len(self._map), "dirty": len(self._dirty),
                "hits": self.hits, "misses": self.misses}
