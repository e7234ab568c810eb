"""Guest memory: one anonymous mapping standing for the kernel's RAM.

Devices see this memory by physical address, as a virtio device sees guest
RAM: virtqueues and DMA buffers live here, and a descriptor's ``addr`` is an
offset into it. Allocation is a binary buddy allocator over 4 KiB pages, so
contiguous buffers of any power-of-two size up to the arena are available and
freed blocks merge back.
"""

from __future__ import annotations

import mmap
import threading

from .errors import kerr

PAGE_SIZE = 4096
_PAGE_SHIFT = 12


class Arena:
    """Guest physical memory with a buddy allocator.

    Address 0 is never handed out (a zero address in a descriptor is a bug
    that the device should catch), so the first page is reserved.
    """

    def __init__(self, size: int) -> None:
        order = max(0, (size - 1).bit_length() - _PAGE_SHIFT)
        self.size = PAGE_SIZE << order
        # private: a forked child gets its own copy of guest memory, as of the fork
        self.mem = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self.mem)
        self.max_order = order
        self._free: list[set[int]] = [set() for _ in range(order + 1)]
        self._free[order].add(0)
        self._orders: dict[int, int] = {}
        self._lock = threading.Lock()
        self.alloc(PAGE_SIZE)  # reserve address 0

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    @staticmethod
    def order_for(size: int) -> int:
        pages = (size + PAGE_SIZE - 1) >> _PAGE_SHIFT
        return max(0, (pages - 1).bit_length())

    def alloc(self, size: int) -> int:
        """Return the address of ``size`` contiguous bytes (ENOMEM if none)."""
        order = self.order_for(size)
        with self._lock:
            o = order
            while o <= self.max_order and not self._free[o]:
                o += 1
            if o > self.max_order:
                raise kerr(12, "guest memory", f"cannot allocate {size} bytes")
            addr = self._free[o].pop()
            while o > order:  # split, keeping the lower half
                o -= 1
                self._free[o].add(addr + (PAGE_SIZE << o))
            self._orders[addr] = order
            return addr

    def free(self, addr: int) -> None:
        with self._lock:
            order = self._orders.pop(addr)
            while order < self.max_order:
                buddy = addr ^ (PAGE_SIZE << order)
                peers = self._free[order]
                if buddy not in peers:
                    break
                peers.remove(buddy)
                addr = min(addr, buddy)
                order += 1
            self._free[order].add(addr)

    def free_bytes(self) -> int:
        with self._lock:
            return sum(len(s) * (PAGE_SIZE << o) for o, s in enumerate(self._free))

    def close(self) -> None:
        self.view.release()
        self.mem.close()
