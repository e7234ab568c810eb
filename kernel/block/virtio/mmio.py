"""virtio over MMIO (virtio 1.x, section 4.2): the register interface.

LKL attaches its virtio devices through virtio-mmio; so do we. The device side
(``MmioDevice``) answers 32-bit register reads and writes at the offsets of
the specification; the driver side (``MmioTransport``) uses nothing but those
reads and writes, plus one interrupt line.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from . import abi
from .ring import DeviceQueue


class MmioDevice:
    """Register file of a version-2 (non-legacy) virtio-mmio device.

    Subclasses set ``device_id``, ``device_features``, ``queue_num_max``,
    provide ``config_bytes()`` and act on ``queue_ready``/``queue_notify``.
    """

    device_id = 0
    vendor_id = 0x4C4B4C00  # "LKL" in the high bytes
    queue_num_max = 256
    num_queues = 1

    def __init__(self, mem: memoryview) -> None:
        self.mem = mem
        self.device_features = 1 << abi.F_VERSION_1
        self.driver_features = 0
        self._dev_sel = 0
        self._drv_sel = 0
        self._queue_sel = 0
        self.status = 0
        self.interrupt_status = 0
        self.config_generation = 0
        self.irq: Callable[[], None] | None = None
        n = self.num_queues
        self._qnum = [0] * n
        self._qaddr = [[0, 0, 0] for _ in range(n)]
        self.queues: list[DeviceQueue | None] = [None] * n

    # -- configuration space ------------------------------------------------
    def config_bytes(self) -> bytes:
        return b""

    # -- register interface ---------------------------------------------------
    def read32(self, offset: int) -> int:
        if offset == abi.MMIO_INTERRUPT_STATUS:  # the register read with every completion
            return self.interrupt_status
        if offset >= abi.MMIO_CONFIG:
            cfg = self.config_bytes()
            off = offset - abi.MMIO_CONFIG
            return int.from_bytes(cfg[off:off + 4].ljust(4, b"\0"), "little")
        if offset == abi.MMIO_MAGIC_VALUE:
            return abi.MMIO_MAGIC
        if offset == abi.MMIO_VERSION:
            return 2
        if offset == abi.MMIO_DEVICE_ID:
            return self.device_id
        if offset == abi.MMIO_VENDOR_ID:
            return self.vendor_id
        if offset == abi.MMIO_DEVICE_FEATURES:
            return (self.device_features >> (32 * self._dev_sel)) & 0xFFFFFFFF
        if offset == abi.MMIO_QUEUE_NUM_MAX:
            return self.queue_num_max if self._queue_sel < self.num_queues else 0
        if offset == abi.MMIO_QUEUE_READY:
            return int(self.queues[self._queue_sel] is not None)
        if offset == abi.MMIO_INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == abi.MMIO_STATUS:
            return self.status
        if offset == abi.MMIO_CONFIG_GENERATION:
            return self.config_generation
        return 0

    def write32(self, offset: int, value: int) -> None:
        # the two registers written with every request first
        if offset == abi.MMIO_QUEUE_NOTIFY:
            if value < self.num_queues and self.queues[value] is not None:
                self.queue_notify(value)
        elif offset == abi.MMIO_INTERRUPT_ACK:
            self.interrupt_status &= ~value
        elif offset == abi.MMIO_DEVICE_FEATURES_SEL:
            self._dev_sel = value
        elif offset == abi.MMIO_DRIVER_FEATURES:
            shift = 32 * self._drv_sel
            mask = 0xFFFFFFFF << shift
            self.driver_features = (self.driver_features & ~mask) | ((value << shift) & mask)
        elif offset == abi.MMIO_DRIVER_FEATURES_SEL:
            self._drv_sel = value
        elif offset == abi.MMIO_QUEUE_SEL:
            self._queue_sel = value
        elif offset == abi.MMIO_QUEUE_NUM:
            self._qnum[self._queue_sel] = value
        elif offset in (abi.MMIO_QUEUE_DESC_LOW, abi.MMIO_QUEUE_DRIVER_LOW, abi.MMIO_QUEUE_DEVICE_LOW,
                        abi.MMIO_QUEUE_DESC_HIGH, abi.MMIO_QUEUE_DRIVER_HIGH, abi.MMIO_QUEUE_DEVICE_HIGH):
            which = (offset - abi.MMIO_QUEUE_DESC_LOW) // 0x10
            high = offset & 4
            addr = self._qaddr[self._queue_sel]
            if high:
                addr[which] = (addr[which] & 0xFFFFFFFF) | (value << 32)
            else:
                addr[which] = (addr[which] & ~0xFFFFFFFF) | value
        elif offset == abi.MMIO_QUEUE_READY:
            q = self._queue_sel
            if value:
                num = self._qnum[q]
                if not num or num > self.queue_num_max or num & (num - 1):
                    self.status |= abi.STATUS_DEVICE_NEEDS_RESET
                    return
                desc, avail, used = self._qaddr[q]
                self.queues[q] = DeviceQueue(self.mem, num, desc, avail, used)
            else:
                self.queues[q] = None
        elif offset == abi.MMIO_STATUS:
            if value == 0:
                self.reset()
            elif value & abi.STATUS_FEATURES_OK and not self.status & abi.STATUS_FEATURES_OK:
                # Accept only features we offered (4.2.3.1.1 / 3.1.1 step 5).
                if self.driver_features & ~self.device_features:
                    value &= ~abi.STATUS_FEATURES_OK
                self.status = value
            else:
                self.status = value

    def reset(self) -> None:
        self.status = 0
        self.driver_features = 0
        self.interrupt_status = 0
        self.queues = [None] * self.num_queues

    def queue_notify(self, index: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def raise_irq(self) -> None:
        self.interrupt_status |= abi.MMIO_INT_VRING
        if self.irq is not None:
            self.irq()

    def negotiated(self, bit: int) -> bool:
        return bool(self.driver_features >> bit & 1)


class MmioTransport:
    """The driver's view of a virtio-mmio device: registers and an IRQ line."""

    _U32 = struct.Struct("<I")

    def __init__(self, device: MmioDevice) -> None:
        self.dev = device
        if device.read32(abi.MMIO_MAGIC_VALUE) != abi.MMIO_MAGIC:
            raise ValueError("not a virtio-mmio device")
        if device.read32(abi.MMIO_VERSION) != 2:
            raise ValueError("legacy virtio-mmio devices are not supported")

    def read32(self, offset: int) -> int:
        return self.dev.read32(offset)

    def write32(self, offset: int, value: int) -> None:
        self.dev.write32(offset, value)

    def device_features(self) -> int:
        w = self.write32
        w(abi.MMIO_DEVICE_FEATURES_SEL, 0)
        lo = self.read32(abi.MMIO_DEVICE_FEATURES)
        w(abi.MMIO_DEVICE_FEATURES_SEL, 1)
        hi = self.read32(abi.MMIO_DEVICE_FEATURES)
        return hi << 32 | lo

    def set_driver_features(self, features: int) -> None:
        w = self.write32
        w(abi.MMIO_DRIVER_FEATURES_SEL, 0)
        w(abi.MMIO_DRIVER_FEATURES, features & 0xFFFFFFFF)
        w(abi.MMIO_DRIVER_FEATURES_SEL, 1)
        w(abi.MMIO_DRIVER_FEATURES, features >> 32)

    def read_config(self, offset: int, length: int) -> bytes:
        """Read the config space consistently (re-read while the generation changes)."""
        while True:
            gen = self.read32(abi.MMIO_CONFIG_GENERATION)
            words = [self.read32(abi.MMIO_CONFIG + o) for o in range(offset & ~3, offset + length, 4)]
            if self.read32(abi.MMIO_CONFIG_GENERATION) == gen:
                raw = b"".join(self._U32.pack(x) for x in words)
                return raw[offset & 3:(offset & 3) + length]

    def setup_queue(self, index: int, num: int, desc: int, avail: int, used: int) -> None:
        w = self.write32
        w(abi.MMIO_QUEUE_SEL, index)
        if self.read32(abi.MMIO_QUEUE_READY):
            raise ValueError(f"virtqueue {index} already in use")
        maxnum = self.read32(abi.MMIO_QUEUE_NUM_MAX)
        if num > maxnum:
            raise ValueError(f"virtqueue {index}: size {num} > device maximum {maxnum}")
        w(abi.MMIO_QUEUE_NUM, num)
        for reg, addr in ((abi.MMIO_QUEUE_DESC_LOW, desc), (abi.MMIO_QUEUE_DRIVER_LOW, avail),
                          (abi.MMIO_QUEUE_DEVICE_LOW, used)):
            w(reg, addr & 0xFFFFFFFF)
            w(reg + 4, addr >> 32)
        w(abi.MMIO_QUEUE_READY, 1)

    def notify(self, index: int) -> None:
        self.write32(abi.MMIO_QUEUE_NOTIFY, index)

    def status(self) -> int:
        return self.read32(abi.MMIO_STATUS)

    def set_status(self, value: int) -> None:
        self.write32(abi.MMIO_STATUS, value)

    def ack_interrupt(self) -> int:
        pending = self.read32(abi.MMIO_INTERRUPT_STATUS)
        if pending:
            self.write32(abi.MMIO_INTERRUPT_ACK, pending)
        return pending
