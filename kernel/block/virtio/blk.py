"""The virtio-blk driver: turns bios into virtio-blk requests on a virtqueue.

Probe follows the device initialization sequence of virtio 1.x (3.1.1):
reset, ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK (and check it
stuck), queue set-up, DRIVER_OK. Each bio becomes one descriptor chain: the
16-byte ``virtio_blk_outhdr``, the data (device-writable for reads) and the
one-byte status. Data travels through a bounce buffer in guest memory, one
per request, whose segments lie end to end: it is described by as few
descriptors as the device's ``size_max`` allows (as Linux's block layer
merges physically contiguous segments), not one per segment. Headers and
status bytes live in a per-queue array of 32-byte slots.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Sequence

from ...errors import kerr
from ...mm import Arena
from ..blkdev import (
    REQ_OP_DISCARD,
    REQ_OP_FLUSH,
    REQ_OP_READ,
    REQ_OP_WRITE,
    REQ_OP_WRITE_ZEROES,
    Bio,
    GenDisk,
    QueueLimits,
)
from . import abi
from .mmio import MmioTransport
from .ring import DriverQueue, RingLayout

log = logging.getLogger(__name__)

_HDR = abi.virtio_blk_outhdr.struct
_SEG = abi.virtio_blk_discard_write_zeroes.struct

DRIVER_FEATURES = (
    (1 << abi.F_VERSION_1)
    | (1 << abi.BLK_F_SEG_MAX)
    | (1 << abi.BLK_F_SIZE_MAX)
    | (1 << abi.BLK_F_BLK_SIZE)
    | (1 << abi.BLK_F_RO)
    | (1 << abi.BLK_F_FLUSH)
    | (1 << abi.BLK_F_DISCARD)
    | (1 << abi.BLK_F_WRITE_ZEROES)
)

_OP_TYPE = {
    REQ_OP_READ: abi.BLK_T_IN,
    REQ_OP_WRITE: abi.BLK_T_OUT,
    REQ_OP_FLUSH: abi.BLK_T_FLUSH,
    REQ_OP_DISCARD: abi.BLK_T_DISCARD,
    REQ_OP_WRITE_ZEROES: abi.BLK_T_WRITE_ZEROES,
}
_GET_ID = -1


class _Req:
    __slots__ = ("bio", "slot", "bounce", "status_addr", "done")

    def __init__(self, bio: Bio, slot: int, bounce: int, status_addr: int) -> None:
        self.bio = bio
        self.slot = slot
        self.bounce = bounce
        self.status_addr = status_addr
        self.done = False


class VirtioBlk(GenDisk):
    """A virtio-blk disk, probed over a virtio-mmio transport."""

    QUEUE_SIZE = 256

    def __init__(self, transport: MmioTransport, arena: Arena, name: str, major: int,
                 first_minor: int) -> None:
        self.t = transport
        self.arena = arena
        self.mem = arena.view
        self.name = name
        self.major = major
        self.first_minor = first_minor
        self._cond = threading.Condition(threading.Lock())
        self._probe()

    # -- probe ----------------------------------------------------------------
    def _probe(self) -> None:
        t = self.t
        if t.read32(abi.MMIO_DEVICE_ID) != abi.DEVICE_ID_BLOCK:
            raise kerr(errno.ENODEV, self.name, "not a virtio block device")
        t.set_status(0)
        t.set_status(abi.STATUS_ACKNOWLEDGE)
        t.set_status(abi.STATUS_ACKNOWLEDGE | abi.STATUS_DRIVER)
        offered = t.device_features()
        if not offered >> abi.F_VERSION_1 & 1:
            t.set_status(abi.STATUS_FAILED)
            raise kerr(errno.ENODEV, self.name, "device does not offer VIRTIO_F_VERSION_1")
        self.features = offered & DRIVER_FEATURES
        t.set_driver_features(self.features)
        status = abi.STATUS_ACKNOWLEDGE | abi.STATUS_DRIVER | abi.STATUS_FEATURES_OK
        t.set_status(status)
        if not t.status() & abi.STATUS_FEATURES_OK:
            t.set_status(abi.STATUS_FAILED)
            raise kerr(errno.ENODEV, self.name, "device refused the negotiated features")

        cfg = abi.virtio_blk_config.unpack(t.read_config(0, abi.virtio_blk_config.size))
        self.capacity = cfg.capacity
        self.ro = self.has(abi.BLK_F_RO)
        seg_max = cfg.seg_max if self.has(abi.BLK_F_SEG_MAX) else 1
        size_max = cfg.size_max if self.has(abi.BLK_F_SIZE_MAX) and cfg.size_max else 1 << 20
        num = min(self.QUEUE_SIZE, t.dev.queue_num_max)
        seg_max = max(1, min(seg_max, num - 2))
        self.limits = QueueLimits(
            logical_block_size=cfg.blk_size if self.has(abi.BLK_F_BLK_SIZE) else 512,
            max_segments=seg_max,
            max_segment_size=size_max,
            max_sectors=min(seg_max * size_max, 4 << 20) >> 9,
            max_discard_sectors=cfg.max_discard_sectors if self.has(abi.BLK_F_DISCARD) else 0,
            max_write_zeroes_sectors=(cfg.max_write_zeroes_sectors
                                      if self.has(abi.BLK_F_WRITE_ZEROES) else 0),
            flush=self.has(abi.BLK_F_FLUSH),
        )
        self.max_discard_seg = max(1, cfg.max_discard_seg)

        layout = RingLayout.for_size(num)
        self.layout = layout
        self._ring_addr = self.arena.alloc(layout.size)
        base = self._ring_addr
        self.vq = DriverQueue(self.mem, num, base + layout.desc, base + layout.avail,
                              base + layout.used)
        self._slots_addr = self.arena.alloc(num * 32)
        self._free_slots = list(range(num - 1, -1, -1))
        t.setup_queue(0, num, base + layout.desc, base + layout.avail, base + layout.used)
        t.dev.irq = self._interrupt
        t.set_status(status | abi.STATUS_DRIVER_OK)

    def has(self, bit: int) -> bool:
        return bool(self.features >> bit & 1)

    # -- completion -----------------------------------------------------------
    def _interrupt(self) -> None:
        with self._cond:
            self.t.ack_interrupt()
            for token, _written in self.vq.get_used():
                token.done = True  # type: ignore[attr-defined]
            self._cond.notify_all()

    # -- submission -----------------------------------------------------------
    def submit(self, bios: Sequence[Bio]) -> None:
        self._run([(b, b.op) for b in bios])

    def get_id(self) -> bytes:
        buf = bytearray(abi.BLK_ID_BYTES)
        self._run([(Bio(REQ_OP_READ, 0, [memoryview(buf)]), _GET_ID)])
        return bytes(buf).rstrip(b"\0")

    def _run(self, work: list[tuple[Bio, int]]) -> None:
        pending = list(reversed(work))
        inflight: list[_Req] = []
        errors: list[str] = []
        unsupported = False
        while pending or inflight:
            added = 0
            with self._cond:
                while pending:
                    bio, op = pending[-1]
                    # (it can never fit only if nobody's request is in flight)
                    req = self._prepare(bio, op, len(self._free_slots) == self.vq.num)
                    if req is None:
                        if inflight or added:
                            break
                        self._cond.wait()  # another thread's requests fill the ring
                        continue
                    pending.pop()
                    inflight.append(req)
                    added += 1
                if added:
                    self.vq.publish()
            if added:
                self.t.notify(0)
            with self._cond:
                while inflight and not any(r.done for r in inflight):
                    self._cond.wait()
                finished = [r for r in inflight if r.done]
                inflight = [r for r in inflight if not r.done]
            for req in finished:
                status = self._complete(req)
                if status == abi.BLK_S_UNSUPP:
                    unsupported = True
                elif status != abi.BLK_S_OK:
                    errors.append(f"sector {req.bio.sector}")
        if unsupported:
            raise kerr(errno.EOPNOTSUPP, f"/dev/{self.name}", "request not supported by the device")
        if errors:
            raise kerr(errno.EIO, f"/dev/{self.name}", "I/O error at " + ", ".join(errors[:4]))

    def _prepare(self, bio: Bio, op: int, must: bool) -> _Req | None:
        """Place one request on the ring; None when the ring or memory is full."""
        vq = self.vq
        rtype = abi.BLK_T_GET_ID if op == _GET_ID else _OP_TYPE[op]
        payload: bytes | None = None
        if rtype in (abi.BLK_T_DISCARD, abi.BLK_T_WRITE_ZEROES):
            payload = _SEG.pack(bio.sector, bio.nr_sectors,
                                abi.BLK_WRITE_ZEROES_FLAG_UNMAP if bio.unmap else 0)
            total = len(payload)
        else:
            total = sum(map(len, bio.segs))
        # the data lies in one bounce buffer: as few descriptors as the device's size_max allows
        size_max = self.limits.max_segment_size
        ndata = -(-total // size_max)
        if ndata + 2 > vq.num_free() or not self._free_slots:
            if must:
                raise kerr(errno.EIO, f"/dev/{self.name}", "request larger than the virtqueue")
            return None
        bounce = 0
        if total:
            try:
                bounce = self.arena.alloc(total)
            except OSError:
                if must:
                    raise
                return None
        slot = self._free_slots.pop()
        hdr = self._slots_addr + 32 * slot
        mem = self.mem
        sector = 0 if rtype in (abi.BLK_T_FLUSH, abi.BLK_T_GET_ID, abi.BLK_T_DISCARD,
                                abi.BLK_T_WRITE_ZEROES) else bio.sector
        _HDR.pack_into(mem, hdr, rtype, 0, sector)
        status_addr = hdr + 16
        mem[status_addr] = 0xFF
        device_writes = rtype in (abi.BLK_T_IN, abi.BLK_T_GET_ID)
        if payload is not None:
            mem[bounce:bounce + total] = payload
        elif not device_writes:
            pos = bounce
            for seg in bio.segs:
                n = len(seg)
                mem[pos:pos + n] = seg
                pos += n
        chain = [(hdr, 16, False)]
        chain.extend((a, min(size_max, bounce + total - a), device_writes)
                     for a in range(bounce, bounce + total, size_max))
        chain.append((status_addr, 1, True))
        req = _Req(bio, slot, bounce, status_addr)
        vq.add_chain(chain, req)
        return req

    def _complete(self, req: _Req) -> int:
        mem = self.mem
        status = mem[req.status_addr]
        bio = req.bio
        if status == abi.BLK_S_OK and bio.op == REQ_OP_READ:
            pos = req.bounce
            for seg in bio.segs:
                n = len(seg)
                seg[:] = mem[pos:pos + n]
                pos += n
        if req.bounce:
            self.arena.free(req.bounce)
        with self._cond:
            self._free_slots.append(req.slot)
            self._cond.notify_all()  # room for a thread waiting to place a request
        return status

    def after_fork_in_child(self) -> None:
        super().after_fork_in_child()
        self._cond = threading.Condition(threading.Lock())

    def shutdown(self) -> None:
        super().shutdown()
        self.t.set_status(0)
        stop = getattr(self.t.dev, "stop", None)
        if stop is not None:
            stop()
