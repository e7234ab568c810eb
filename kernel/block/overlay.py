"""A copy-on-write overlay in memory over a block device.

Read-only mounts of a filesystem that needs journal or log recovery replay
into an overlay: the replayed blocks live in memory, every read sees them,
and the image underneath is never written. The overlay is itself a
``BlockDevice``, so the buffer cache and the drivers use it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from .blkdev import BlockDevice, Buf


class OverlayDevice(BlockDevice):
    """``base`` with writes kept in memory at ``granularity``-byte blocks."""

    def __init__(self, base: BlockDevice, granularity: int = 4096) -> None:
        super().__init__(base.disk, base.partno, base.start_sect, base.nr_sects, base.name, base.dev)
        self.base = base
        self.ro = False
        self.gran = granularity
        self.blocks: dict[int, bytes] = {}
        # blocks a log replay could not verify (XFS: their checks are the log's, not ours)
        self.unverifiable: set[int] = set()

    def __repr__(self) -> str:
        return f"<OverlayDevice over {self.base!r}, {len(self.blocks)} blocks>"

    def _fill(self, offset: int, buf: memoryview) -> None:
        """Patch ``buf`` (the base's bytes at ``offset``) with overlay blocks."""
        g = self.gran
        blocks = self.blocks
        end = offset + len(buf)
        first = offset // g
        last = (end - 1) // g
        if len(blocks) < last - first:
            keys = [b for b in blocks if first <= b <= last]
        else:
            keys = [b for b in range(first, last + 1) if b in blocks]
        for b in keys:
            data = blocks[b]
            s = max(offset, b * g)
            e = min(end, b * g + g)
            buf[s - offset:e - offset] = data[s - b * g:e - b * g]

    def readv(self, offset: int, bufs: Sequence[Buf]) -> None:
        self.base.readv(offset, bufs)
        if self.blocks:
            pos = offset
            for b in bufs:
                self._fill(pos, b if isinstance(b, memoryview) else memoryview(b))
                pos += len(b)

    def read_small(self, offset: int, buf: memoryview) -> None:
        self.base.read_small(offset, buf)
        if self.blocks:
            self._fill(offset, buf)

    def submit_many(self, reads: Sequence[tuple[int, Sequence[Buf]]]) -> None:
        self.base.submit_many(reads)
        if self.blocks:
            for offset, bufs in reads:
                pos = offset
                for b in bufs:
                    self._fill(pos, b if isinstance(b, memoryview) else memoryview(b))
                    pos += len(b)

    def writev(self, offset: int, bufs: Sequence[Buf]) -> None:
        data = b"".join(bytes(b) for b in bufs)
        self._check(offset, len(data), False)
        g = self.gran
        end = offset + len(data)
        pos = offset
        while pos < end:
            b = pos // g
            s, e = pos, min(end, b * g + g)
            old = self.blocks.get(b)
            if old is None:
                if s == b * g and e == b * g + g:
                    old = bytes(g)
                else:
                    old = bytes(self.base.read(b * g, g))
            blk = bytearray(old)
            blk[s - b * g:e - b * g] = data[s - offset:e - offset]
            self.blocks[b] = bytes(blk)
            pos = e

    def write_many(self, writes: Sequence[tuple[int, Sequence[Buf]]], wait: bool = True) -> None:
        for offset, bufs in writes:  # (in memory: done at once)
            self.writev(offset, bufs)

    def flush(self, wait: bool = True) -> None:
        pass

    def discard(self, offset: int, length: int) -> None:
        pass

    def zeroout(self, offset: int, length: int, unmap: bool = True) -> None:
        self.writev(offset, [bytearray(length)])
