"""Split virtqueues (virtio 1.x, section 2.7), both sides, in guest memory.

Layout for a queue of ``num`` entries (``num`` a power of two)::

    descriptor table  16 * num bytes, 16-byte aligned
        le64 addr; le32 len; le16 flags; le16 next;
    available ring     6 + 2 * num bytes, 2-byte aligned
        le16 flags; le16 idx; le16 ring[num]; le16 used_event;
    used ring          6 + 8 * num bytes, 4-byte aligned
        le16 flags; le16 idx; struct { le32 id; le32 len; } ring[num]; le16 avail_event;

``idx`` fields are free-running 16-bit counters; entry ``i`` lives in slot
``i % num``. The driver owns the descriptor table and the available ring, the
device owns the used ring.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

from ...errors import kerr
from .abi import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, virtq_desc

_U16 = struct.Struct("<H")
_DESC = virtq_desc.struct
_USED_ELEM = struct.Struct("<II")

DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


@dataclass(frozen=True)
class RingLayout:
    """Offsets of the three areas of a split virtqueue, from its base."""

    num: int
    desc: int
    avail: int
    used: int
    size: int

    @classmethod
    def for_size(cls, num: int) -> RingLayout:
        if num <= 0 or num & (num - 1) or num > 32768:
            raise ValueError(f"virtqueue size {num} is not a power of two <= 32768")
        desc = 0
        avail = _align(desc + 16 * num, AVAIL_ALIGN)
        used = _align(avail + 6 + 2 * num, USED_ALIGN)
        return cls(num, desc, avail, used, used + 6 + 8 * num)

    # Field offsets inside the areas (relative to the area's start).
    AVAIL_FLAGS = 0
    AVAIL_IDX = 2
    AVAIL_RING = 4
    USED_FLAGS = 0
    USED_IDX = 2
    USED_RING = 4

    def avail_used_event(self) -> int:
        return self.AVAIL_RING + 2 * self.num

    def used_avail_event(self) -> int:
        return self.USED_RING + 8 * self.num


class DriverQueue:
    """The driver's side: builds descriptor chains and reads completions."""

    def __init__(self, mem: memoryview, num: int, desc: int, avail: int, used: int) -> None:
        self.mem = mem
        self.num = num
        self.desc = desc
        self.avail = avail
        self.used = used
        self.avail_idx = 0
        self.last_used = 0
        self.free: list[int] = list(range(num - 1, -1, -1))
        self.tokens: list[object] = [None] * num
        self._chain_len = [0] * num
        for i in range(num):
            _DESC.pack_into(mem, desc + 16 * i, 0, 0, 0, 0)
        _U16.pack_into(mem, avail + RingLayout.AVAIL_FLAGS, 0)
        _U16.pack_into(mem, avail + RingLayout.AVAIL_IDX, 0)

    def num_free(self) -> int:
        return len(self.free)

    def add_chain(self, segments: list[tuple[int, int, bool]], token: object) -> int:
        """Chain ``(addr, len, device_writes)`` buffers; return the head index.

        The chain becomes visible to the device only after ``publish``.
        """
        n = len(segments)
        if n > len(self.free):
            raise kerr(28, "virtqueue", "no free descriptors")  # ENOSPC: caller waits
        free = self.free
        ids = [free.pop() for _ in range(n)]
        mem, base = self.mem, self.desc
        for i, (addr, length, writable) in enumerate(segments):
            flags = VIRTQ_DESC_F_WRITE if writable else 0
            nxt = 0
            if i + 1 < n:
                flags |= VIRTQ_DESC_F_NEXT
                nxt = ids[i + 1]
            _DESC.pack_into(mem, base + 16 * ids[i], addr, length, flags, nxt)
        head = ids[0]
        self.tokens[head] = token
        self._chain_len[head] = n
        slot = self.avail + RingLayout.AVAIL_RING + 2 * (self.avail_idx % self.num)
        _U16.pack_into(mem, slot, head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        return head

    def publish(self) -> None:
        """Make every added chain visible (the write of avail->idx)."""
        _U16.pack_into(self.mem, self.avail + RingLayout.AVAIL_IDX, self.avail_idx)

    def get_used(self) -> list[tuple[object, int]]:
        """Reclaim the chains the device has completed: ``(token, written)``."""
        mem = self.mem
        used_idx = _U16.unpack_from(mem, self.used + RingLayout.USED_IDX)[0]
        out = []
        while self.last_used != used_idx:
            slot = self.used + RingLayout.USED_RING + 8 * (self.last_used % self.num)
            head, written = _USED_ELEM.unpack_from(mem, slot)
            if head >= self.num or self.tokens[head] is None:
                raise kerr(5, "virtqueue", f"device returned unknown descriptor {head}")
            token = self.tokens[head]
            self.tokens[head] = None
            self._release(head)
            out.append((token, written))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out

    def _release(self, head: int) -> None:
        i = head
        for _ in range(self._chain_len[head]):
            self.free.append(i)
            i = _DESC.unpack_from(self.mem, self.desc + 16 * i)[3]


class DeviceQueue:
    """The device's side: pops available chains and pushes used entries."""

    def __init__(self, mem: memoryview, num: int, desc: int, avail: int, used: int) -> None:
        self.mem = mem
        self.num = num
        self.desc = desc
        self.avail = avail
        self.used = used
        self.last_avail = 0
        self._used_lock = threading.Lock()
        self._used_idx = 0

    def after_fork_in_child(self) -> None:
        self._used_lock = threading.Lock()

    def pop_avail(self) -> list[int]:
        """Heads of the chains made available since the last call."""
        idx = _U16.unpack_from(self.mem, self.avail + RingLayout.AVAIL_IDX)[0]
        heads = []
        ring = self.avail + RingLayout.AVAIL_RING
        while self.last_avail != idx:
            heads.append(_U16.unpack_from(self.mem, ring + 2 * (self.last_avail % self.num))[0])
            self.last_avail = (self.last_avail + 1) & 0xFFFF
        return heads

    def chain(self, head: int) -> list[tuple[int, int, bool]]:
        """Walk a chain into ``(addr, len, device_writes)``, following indirect tables.

        A malformed chain (loop, index out of range, nested indirect) is a
        driver bug; it raises EIO instead of looping forever.
        """
        mem = self.mem
        out: list[tuple[int, int, bool]] = []
        table, size, i = self.desc, self.num, head
        seen = 0
        indirect = False
        while True:
            if i >= size:
                raise kerr(5, "virtqueue", f"descriptor index {i} out of range")
            addr, length, flags, nxt = _DESC.unpack_from(mem, table + 16 * i)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if indirect or length % 16 or not length:
                    raise kerr(5, "virtqueue", "bad indirect descriptor")
                table, size, i, indirect, seen = addr, length // 16, 0, True, 0
                continue
            out.append((addr, length, bool(flags & VIRTQ_DESC_F_WRITE)))
            seen += 1
            if not flags & VIRTQ_DESC_F_NEXT:
                return out
            if seen >= size:
                raise kerr(5, "virtqueue", "descriptor chain loops")
            i = nxt

    def push_used(self, head: int, written: int) -> None:
        """Return a chain to the driver (safe to call from several threads)."""
        with self._used_lock:
            slot = self.used + RingLayout.USED_RING + 8 * (self._used_idx % self.num)
            _USED_ELEM.pack_into(self.mem, slot, head, written)
            self._used_idx = (self._used_idx + 1) & 0xFFFF
            _U16.pack_into(self.mem, self.used + RingLayout.USED_IDX, self._used_idx)
