"""The host side of virtio-blk: serves request chains from guest memory.

The device pops chains from the available ring, decodes each request
(header, data buffers, status byte), performs it on its backend and returns
the chain on the used ring with the number of bytes it wrote. A kick that
carries a single request or moves little data is served on the calling thread
(a hop to a worker costs more than the request); a kick with several large
requests is spread over a small pool of I/O threads, where ``preadv`` and
``pwritev`` release the GIL and so overlap.
"""

from __future__ import annotations

import logging
import queue
import threading

from . import abi
from .backend import Backend
from .mmio import MmioDevice
from .ring import DeviceQueue

log = logging.getLogger(__name__)

_HDR = abi.virtio_blk_outhdr.struct
Chain = list[tuple[int, int, bool]]  # (address, length, device writes) per descriptor
_INLINE_BYTES = 1 << 20  # a kick moving less than this is served on the notifying thread
_SEG = abi.virtio_blk_discard_write_zeroes.struct


class VirtioBlkDevice(MmioDevice):
    device_id = abi.DEVICE_ID_BLOCK
    queue_num_max = 256
    seg_max = 254
    size_max = 1 << 20
    max_discard_sectors = 1 << 22
    max_discard_seg = 16

    def __init__(self, mem: memoryview, backend: Backend, io_threads: int = 2) -> None:
        super().__init__(mem)
        self.backend = backend
        feats = self.device_features
        for bit in (abi.BLK_F_SEG_MAX, abi.BLK_F_SIZE_MAX, abi.BLK_F_BLK_SIZE, abi.BLK_F_FLUSH,
                    abi.BLK_F_DISCARD, abi.BLK_F_WRITE_ZEROES, abi.F_INDIRECT_DESC):
            feats |= 1 << bit
        if backend.readonly:
            feats |= 1 << abi.BLK_F_RO
        self.device_features = feats
        self.io_threads = io_threads
        self._work: queue.SimpleQueue[tuple[DeviceQueue, int, Chain | None] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self.requests = 0  # served requests, for statistics and tests

    def config_bytes(self) -> bytes:
        return abi.virtio_blk_config.pack(
            capacity=self.backend.size // abi.SECTOR_SIZE,
            size_max=self.size_max,
            seg_max=self.seg_max,
            blk_size=abi.SECTOR_SIZE,
            max_discard_sectors=self.max_discard_sectors,
            max_discard_seg=self.max_discard_seg,
            discard_sector_alignment=1,
            max_write_zeroes_sectors=self.max_discard_sectors,
            max_write_zeroes_seg=self.max_discard_seg,
            write_zeroes_may_unmap=1,
            unused1=b"",
        )

    # -- request processing -------------------------------------------------
    def queue_notify(self, index: int) -> None:
        q = self.queues[index]
        assert q is not None
        jobs = [(head, self._chain(q, head)) for head in q.pop_avail()]
        if len(jobs) == 1 or self.io_threads <= 1 or \
                sum(length for _h, chain in jobs for _a, length, _w in chain or ()) <= _INLINE_BYTES:
            # a hop to the I/O threads costs more than this much page-cache copying
            for head, chain in jobs:
                q.push_used(head, self.process(chain))
            self.raise_irq()
            return
        self._start_workers()
        for head, chain in jobs:
            self._work.put((q, head, chain))

    @staticmethod
    def _chain(q: DeviceQueue, head: int) -> Chain | None:
        """The request chain at ``head``, or None (logged) when the driver's descriptors are
        broken."""
        try:
            return q.chain(head)
        except OSError as e:
            log.error("virtio-blk: bad chain %d: %s", head, e)
            return None

    def _start_workers(self) -> None:
        while len(self._workers) < self.io_threads:
            t = threading.Thread(target=self._worker, name=f"virtio-blk-io{len(self._workers)}",
                                 daemon=True)
            self._workers.append(t)
            t.start()

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            q, head, chain = item
            q.push_used(head, self.process(chain))
            self.raise_irq()

    def after_fork_in_child(self) -> None:
        """The I/O threads stayed in the parent: start afresh (they start when needed)."""
        self._work = queue.SimpleQueue()
        self._workers = []
        for q in self.queues:
            if q is not None:
                q.after_fork_in_child()

    def stop(self) -> None:
        for _ in self._workers:
            self._work.put(None)
        for t in self._workers:
            t.join()
        self._workers.clear()

    def process(self, chain: Chain | None) -> int:
        """Serve one chain (None: unreadable, already logged); return the bytes written into
        device-writable buffers."""
        self.requests += 1
        if chain is None:
            return 0
        if len(chain) < 2 or chain[0][2] or chain[0][1] < 16 or not chain[-1][2]:
            log.error("virtio-blk: malformed request chain of %d descriptors", len(chain))
            return 0
        status_addr = chain[-1][0]
        if not self._in_bounds(status_addr, 1):
            return 0
        mem = self.mem
        written = 1
        try:
            rtype, _ioprio, sector = _HDR.unpack_from(mem, chain[0][0])
            data = chain[1:-1]
            status = self._serve(rtype, sector, data)
            if status == abi.BLK_S_OK and rtype in (abi.BLK_T_IN, abi.BLK_T_GET_ID):
                written += sum(length for _a, length, _w in data)
        except OSError as e:
            log.error("virtio-blk: I/O error on %s: %s", self.backend.serial.decode(), e)
            status = abi.BLK_S_IOERR
        mem[status_addr] = status
        return written

    def _in_bounds(self, addr: int, length: int) -> bool:
        return 0 < addr and addr + length <= len(self.mem)

    def _views(self, data: list[tuple[int, int, bool]], device_writes: bool) -> list[memoryview] | None:
        views = []
        for addr, length, writable in data:
            if writable != device_writes or not self._in_bounds(addr, length):
                return None
            views.append(self.mem[addr:addr + length])
        return views

    def _serve(self, rtype: int, sector: int, data: list[tuple[int, int, bool]]) -> int:
        backend = self.backend
        capacity = backend.size // abi.SECTOR_SIZE
        if rtype in (abi.BLK_T_IN, abi.BLK_T_OUT):
            views = self._views(data, rtype == abi.BLK_T_IN)
            if views is None:
                return abi.BLK_S_IOERR
            total = sum(len(v) for v in views)
            if total % abi.SECTOR_SIZE or sector + total // abi.SECTOR_SIZE > capacity:
                return abi.BLK_S_IOERR
            offset = sector * abi.SECTOR_SIZE
            if rtype == abi.BLK_T_IN:
                backend.preadv(views, offset)
            else:
                if backend.readonly:
                    return abi.BLK_S_IOERR
                backend.pwritev(views, offset)
            return abi.BLK_S_OK
        if rtype == abi.BLK_T_FLUSH:
            if not self.negotiated(abi.BLK_F_FLUSH):
                return abi.BLK_S_UNSUPP
            if not backend.readonly:
                backend.flush()
            return abi.BLK_S_OK
        if rtype == abi.BLK_T_GET_ID:
            views = self._views(data, True)
            if views is None:
                return abi.BLK_S_IOERR
            ident = backend.serial.ljust(abi.BLK_ID_BYTES, b"\0")
            pos = 0
            for v in views:
                chunk = ident[pos:pos + len(v)]
                v[:len(chunk)] = chunk
                pos += len(chunk)
            return abi.BLK_S_OK
        if rtype in (abi.BLK_T_DISCARD, abi.BLK_T_WRITE_ZEROES):
            feature = abi.BLK_F_DISCARD if rtype == abi.BLK_T_DISCARD else abi.BLK_F_WRITE_ZEROES
            if not self.negotiated(feature):
                return abi.BLK_S_UNSUPP
            if backend.readonly:
                return abi.BLK_S_IOERR
            views = self._views(data, False)
            if views is None:
                return abi.BLK_S_IOERR
            raw = b"".join(bytes(v) for v in views)
            if len(raw) % 16 or len(raw) // 16 > self.max_discard_seg:
                return abi.BLK_S_IOERR
            segs = [_SEG.unpack_from(raw, o) for o in range(0, len(raw), 16)]
            for start, count, _flags in segs:
                if start + count > capacity or count > self.max_discard_sectors:
                    return abi.BLK_S_IOERR
            for start, count, flags in segs:
                off, length = start * abi.SECTOR_SIZE, count * abi.SECTOR_SIZE
                if rtype == abi.BLK_T_DISCARD:
                    backend.discard(off, length)
                else:
                    backend.write_zeroes(off, length, bool(flags & abi.BLK_WRITE_ZEROES_FLAG_UNMAP))
            return abi.BLK_S_OK
        return abi.BLK_S_UNSUPP
