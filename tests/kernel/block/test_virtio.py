"""virtio-blk: ring layout, request chains, features, 64-bit sectors, FLUSH, DISCARD, read-only."""

from __future__ import annotations

import errno
import hashlib
import os
import struct

import pytest

from kernel import Kernel
from kernel.block.blkdev import REQ_OP_READ, REQ_OP_WRITE, Bio
from kernel.block.virtio import abi
from kernel.block.virtio.backend import RawFile
from kernel.block.virtio.blk import VirtioBlk
from kernel.block.virtio.device import VirtioBlkDevice
from kernel.block.virtio.mmio import MmioTransport
from kernel.block.virtio.ring import DeviceQueue, DriverQueue, RingLayout
from kernel.mm import Arena

TIB = 1 << 40


def _image(path, size: int, fill: bool = True) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
        if fill:
            # a recognisable pattern: every 512-byte sector holds its number
            f.write(b"".join(struct.pack("<Q", i) * 64 for i in range(size // 512)))
    return os.fspath(path)


def _sector(i: int) -> bytes:
    return struct.pack("<Q", i) * 64


@pytest.mark.parametrize("num", [1, 2, 8, 128, 256, 1024])
def test_ring_layout_matches_the_spec(num: int) -> None:
    lay = RingLayout.for_size(num)
    # virtio 1.x 2.7: descriptor table 16*N (align 16), avail 6+2N (align 2), used 6+8N (align 4)
    assert lay.desc == 0
    assert lay.avail == 16 * num
    assert lay.used == (16 * num + 6 + 2 * num + 3) & ~3
    assert lay.size == lay.used + 6 + 8 * num
    assert lay.avail_used_event() == 4 + 2 * num
    assert lay.used_avail_event() == 4 + 8 * num


def test_ring_sizes_must_be_powers_of_two() -> None:
    for bad in (0, 3, 100, 65536):
        with pytest.raises(ValueError):
            RingLayout.for_size(bad)


def test_structure_sizes_and_offsets() -> None:
    assert abi.virtq_desc.size == 16
    assert abi.virtio_blk_outhdr.size == 16
    assert abi.virtio_blk_discard_write_zeroes.size == 16
    cfg = abi.virtio_blk_config
    expected = {"capacity": 0, "size_max": 8, "seg_max": 12, "cylinders": 16, "heads": 18,
                "sectors": 19, "blk_size": 20, "physical_block_exp": 24, "min_io_size": 26,
                "opt_io_size": 28, "writeback": 32, "num_queues": 34, "max_discard_sectors": 36,
                "max_discard_seg": 40, "discard_sector_alignment": 44,
                "max_write_zeroes_sectors": 48, "max_write_zeroes_seg": 52,
                "write_zeroes_may_unmap": 56}
    assert {k: cfg.offset_of(k) for k in expected} == expected


def test_descriptors_and_rings_in_guest_memory() -> None:
    arena = Arena(1 << 20)
    num = 8
    lay = RingLayout.for_size(num)
    base = arena.alloc(lay.size)
    mem = arena.view
    drv = DriverQueue(mem, num, base + lay.desc, base + lay.avail, base + lay.used)
    dev = DeviceQueue(mem, num, base + lay.desc, base + lay.avail, base + lay.used)
    head = drv.add_chain([(0x1000, 16, False), (0x2000, 4096, True), (0x3000, 1, True)], "tok")
    drv.publish()
    # raw bytes: descriptor `head` at desc + 16*head: addr, len, flags=NEXT, next
    addr, length, flags, nxt = struct.unpack_from("<QIHH", mem, base + 16 * head)
    assert (addr, length, flags) == (0x1000, 16, 1)
    addr2, len2, flags2, _ = struct.unpack_from("<QIHH", mem, base + 16 * nxt)
    assert (addr2, len2, flags2) == (0x2000, 4096, 1 | 2)  # NEXT | WRITE
    # available ring: flags, idx=1, ring[0]=head
    assert struct.unpack_from("<HHH", mem, base + lay.avail) == (0, 1, head)
    assert dev.pop_avail() == [head]
    assert dev.chain(head) == [(0x1000, 16, False), (0x2000, 4096, True), (0x3000, 1, True)]
    dev.push_used(head, 4097)
    # used ring: flags, idx=1, {id=head, len=4097}
    assert struct.unpack_from("<HHII", mem, base + lay.used) == (0, 1, head, 4097)
    assert drv.get_used() == [("tok", 4097)]
    assert drv.num_free() == num


def test_device_rejects_looping_chain() -> None:
    arena = Arena(1 << 20)
    lay = RingLayout.for_size(4)
    base = arena.alloc(lay.size)
    mem = arena.view
    # two descriptors pointing at each other, both with NEXT
    struct.pack_into("<QIHH", mem, base, 0x1000, 16, 1, 1)
    struct.pack_into("<QIHH", mem, base + 16, 0x1000, 16, 1, 0)
    dev = DeviceQueue(mem, 4, base, base + lay.avail, base + lay.used)
    with pytest.raises(OSError) as e:
        dev.chain(0)
    assert e.value.errno == errno.EIO


def _disk(tmp_path, size: int = 1 << 20, readonly: bool = False, cls=VirtioBlkDevice):
    path = _image(tmp_path / "disk.img", size)
    arena = Arena(4 << 20)
    backend = RawFile(path, readonly=readonly)
    dev = cls(arena.view, backend, io_threads=2)
    gd = VirtioBlk(MmioTransport(dev), arena, "vda", 254, 0)
    return path, dev, gd


def test_feature_negotiation(tmp_path) -> None:
    _path, dev, gd = _disk(tmp_path)
    assert dev.status & abi.STATUS_DRIVER_OK
    assert dev.status & abi.STATUS_FEATURES_OK
    for bit in (abi.F_VERSION_1, abi.BLK_F_SEG_MAX, abi.BLK_F_BLK_SIZE, abi.BLK_F_FLUSH,
                abi.BLK_F_DISCARD, abi.BLK_F_WRITE_ZEROES):
        assert dev.negotiated(bit) and gd.has(bit)
    assert not gd.has(abi.BLK_F_RO) and not gd.ro
    assert gd.capacity == (1 << 20) // 512
    assert gd.limits.max_segments == dev.seg_max
    _p, dev_ro, gd_ro = _disk(tmp_path / "..", readonly=True)
    assert gd_ro.has(abi.BLK_F_RO) and gd_ro.ro


def test_device_refuses_features_it_did_not_offer(tmp_path) -> None:
    _path, dev, _gd = _disk(tmp_path)
    dev.write32(abi.MMIO_STATUS, 0)
    dev.write32(abi.MMIO_STATUS, abi.STATUS_ACKNOWLEDGE | abi.STATUS_DRIVER)
    dev.write32(abi.MMIO_DRIVER_FEATURES_SEL, 0)
    dev.write32(abi.MMIO_DRIVER_FEATURES, 1 << abi.BLK_F_MQ)  # never offered
    dev.write32(abi.MMIO_STATUS, abi.STATUS_ACKNOWLEDGE | abi.STATUS_DRIVER | abi.STATUS_FEATURES_OK)
    assert not dev.read32(abi.MMIO_STATUS) & abi.STATUS_FEATURES_OK


class _Recording(VirtioBlkDevice):
    """The real device, noting the length of every chain it serves."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.chains: list[list[tuple[int, int, bool]]] = []

    def process(self, chain):  # type: ignore[override]
        self.chains.append(chain)
        return super().process(chain)


def test_request_with_several_data_segments(tmp_path) -> None:
    _path, dev, gd = _disk(tmp_path, cls=_Recording)
    segs = [bytearray(512), bytearray(1024), bytearray(2048)]
    gd.submit([Bio(REQ_OP_READ, 10, [memoryview(s) for s in segs])])
    assert len(dev.chains) == 1
    chain = dev.chains[0]
    # header (device-readable), the segments' bounce buffer as one device-writable
    # descriptor (they lie end to end in it), status byte
    assert [(ln, w) for _a, ln, w in chain] == [(16, False), (3584, True), (1, True)]
    data = b"".join(bytes(s) for s in segs)
    assert data == b"".join(_sector(i) for i in range(10, 17))
    # and a write with segments lands where it should
    out = [b"A" * 512, b"B" * 1536]
    gd.submit([Bio(REQ_OP_WRITE, 100, [memoryview(o) for o in out])])
    assert [(ln, w) for _a, ln, w in dev.chains[-1]] == [(16, False), (2048, False), (1, True)]
    with open(_path, "rb") as f:
        f.seek(100 * 512)
        assert f.read(2048) == b"A" * 512 + b"B" * 1536


class _SmallSegments(_Recording):
    size_max = 1024


def test_data_descriptors_are_at_most_size_max(tmp_path) -> None:
    """The device's size_max bounds every data descriptor: a request's bounce buffer is
    cut into pieces of that size, in order, and the data still lands in its segments."""
    path, dev, gd = _disk(tmp_path, cls=_SmallSegments)
    assert gd.limits.max_segment_size == 1024
    segs = [bytearray(512), bytearray(2048), bytearray(1024)]
    gd.submit([Bio(REQ_OP_READ, 20, [memoryview(s) for s in segs])])
    chain = dev.chains[-1]
    assert [(ln, w) for _a, ln, w in chain] == [(16, False), (1024, True), (1024, True),
                                               (1024, True), (512, True), (1, True)]
    addrs = [a for a, _ln, _w in chain[1:-1]]
    assert addrs == [addrs[0] + 1024 * k for k in range(4)]
    assert b"".join(bytes(s) for s in segs) == b"".join(_sector(i) for i in range(20, 27))
    out = [b"C" * 1536, b"D" * 1536]
    gd.submit([Bio(REQ_OP_WRITE, 40, [memoryview(o) for o in out])])
    assert [ln for _a, ln, _w in dev.chains[-1]] == [16, 1024, 1024, 1024, 1]
    with open(path, "rb") as f:
        f.seek(40 * 512)
        assert f.read(3072) == b"C" * 1536 + b"D" * 1536


def test_batch_of_requests_across_io_threads(tmp_path) -> None:
    _path, dev, gd = _disk(tmp_path, size=4 << 20, cls=_Recording)
    bufs = [bytearray(4096) for _ in range(64)]
    gd.submit([Bio(REQ_OP_READ, 8 * (63 - i), [memoryview(b)]) for i, b in enumerate(bufs)])
    assert len(dev.chains) == 64
    for i, b in enumerate(bufs):
        first = 8 * (63 - i)
        assert bytes(b) == b"".join(_sector(s) for s in range(first, first + 8))
    dev.stop()


def test_get_id(tmp_path) -> None:
    _path, _dev, gd = _disk(tmp_path)
    assert gd.get_id() == b"disk.img"


def test_io_past_2_tib_lands_at_the_right_offset(tmp_path) -> None:
    path = tmp_path / "huge.img"
    with open(path, "wb") as f:
        f.truncate(3 * TIB)  # sparse
    with Kernel(mb=8) as k:
        disk = k.disk_add(path)
        bdev = disk.bdev
        assert bdev.size == 3 * TIB
        spots = [2 * TIB, 2 * TIB + 4096 * 7, 3 * TIB - 4096, (1 << 32) * 512 + 64 * 4096]
        for i, off in enumerate(spots):
            bdev.write(off, bytes([0x41 + i]) * 4096)
        for i, off in enumerate(spots):
            assert bdev.read(off, 4096) == bytes([0x41 + i]) * 4096
    # the host file holds the bytes at exactly those offsets (not wrapped at 2 TiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, off in enumerate(spots):
            assert os.pread(fd, 4096, off) == bytes([0x41 + i]) * 4096
        assert os.pread(fd, 4096, 0) == bytes(4096)
        assert os.pread(fd, 4096, 4096 * 7) == bytes(4096)
    finally:
        os.close(fd)
    # and an access past the end fails with EIO instead of wrapping
    with Kernel(mb=8) as k:
        disk = k.disk_add(path)
        with pytest.raises(OSError) as e:
            disk.bdev.read(3 * TIB, 4096)
        assert e.value.errno == errno.EIO


def test_flush_reaches_the_image_as_fdatasync(tmp_path, monkeypatch) -> None:
    path = _image(tmp_path / "f.img", 1 << 20)
    synced: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    with Kernel(mb=8) as k:
        disk = k.disk_add(path)
        backend_fd = disk.device.backend.fd
        disk.bdev.write(0, b"x" * 512)
        assert synced == []
        disk.bdev.flush()
        assert synced == [backend_fd]
        assert disk.device.backend.flushes == 1


def test_discard_punches_a_hole_and_write_zeroes_zeroes(tmp_path) -> None:
    path = _image(tmp_path / "d.img", 8 << 20)
    before = os.stat(path).st_blocks
    with Kernel(mb=8) as k:
        disk = k.disk_add(path)
        disk.bdev.discard(1 << 20, 4 << 20)
        assert disk.bdev.read(1 << 20, 4096) == bytes(4096)
        disk.bdev.zeroout(0, 8192, unmap=False)
        assert disk.bdev.read(0, 8192) == bytes(8192)
        assert disk.bdev.read(8192, 512) == _sector(16)
    assert os.stat(path).st_blocks <= before - (4 << 20) // 512


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_read_only_disk_refuses_every_write(tmp_path) -> None:
    path = _image(tmp_path / "ro.img", 1 << 20)
    digest = _digest(path)
    with Kernel(mb=8) as k:
        disk = k.disk_add(path, readonly=True)
        # the image file is open read-only: no write can reach it
        with open(f"/proc/self/fdinfo/{disk.device.backend.fd}") as f:
            flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        assert flags & os.O_ACCMODE == os.O_RDONLY
        # the block layer refuses with EROFS
        for op in (lambda: disk.bdev.write(0, b"z" * 512), lambda: disk.bdev.discard(0, 4096),
                   lambda: disk.bdev.zeroout(0, 4096)):
            with pytest.raises(OSError) as e:
                op()
            assert e.value.errno == errno.EROFS
        # and the device itself fails a write request that gets past the block layer
        with pytest.raises(OSError) as e:
            disk.gendisk.submit([Bio(REQ_OP_WRITE, 0, [memoryview(bytearray(512))])])
        assert e.value.errno == errno.EIO
        disk.bdev.flush()  # harmless on a read-only disk
    assert _digest(path) == digest


def test_disks_are_named_like_linux(tmp_path) -> None:
    paths = [_image(tmp_path / f"{i}.img", 1 << 16, fill=False) for i in range(3)]
    with Kernel(mb=8) as k:
        disks = [k.disk_add(p, readonly=True) for p in paths]
        assert [d.name for d in disks] == ["vda", "vdb", "vdc"]
        st = k.sys.stat("/dev/vdb")
        assert st.st_mode & 0o170000 == 0o060000
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (254, 16)


def test_missing_image_is_a_clear_error(tmp_path) -> None:
    with Kernel(mb=8) as k:
        with pytest.raises(FileNotFoundError) as e:
            k.disk_add(tmp_path / "nope.img")
        assert "nope.img" in str(e.value)
