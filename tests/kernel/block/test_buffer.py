"""The buffer cache: bounded size, LRU order, pinned buffers, dirty writeback, batched reads."""

from __future__ import annotations

import os
import struct

import pytest

from kernel import Kernel

BS = 4096


def _image(path, blocks: int) -> str:
    with open(path, "wb") as f:
        for i in range(blocks):
            f.write(struct.pack("<Q", i) * (BS // 8))
    return os.fspath(path)


def _block(i: int) -> bytes:
    return struct.pack("<Q", i) * (BS // 8)


@pytest.fixture
def disk(tmp_path):
    path = _image(tmp_path / "b.img", 256)
    k = Kernel(mb=1)
    k.bcache.budget = 16 * BS
    d = k.disk_add(path)
    yield k, d, path
    k.halt()


def test_cache_stays_within_budget_and_evicts_least_recently_used(disk) -> None:
    k, d, _ = disk
    bc = k.bcache
    for i in range(100):
        assert bytes(bc.bread(d.bdev, i, BS).data) == _block(i)
        assert bc.bytes <= bc.budget
    assert bc.peek(d.bdev, 99, BS) is not None
    assert bc.peek(d.bdev, 0, BS) is None
    # touching an old block makes it recent: it survives the next wave
    bc.bread(d.bdev, 98, BS)
    recent = bc.peek(d.bdev, 98, BS)
    for i in range(200, 212):
        bc.bread(d.bdev, i, BS)
    assert bc.peek(d.bdev, 98, BS) is recent
    assert bc.peek(d.bdev, 90, BS) is None


def test_a_held_buffer_is_never_evicted(disk) -> None:
    k, d, _ = disk
    bc = k.bcache
    held = bc.bread(d.bdev, 5, BS)
    for i in range(100, 160):
        bc.bread(d.bdev, i, BS)
    assert bc.peek(d.bdev, 5, BS) is held
    assert bc.bread(d.bdev, 5, BS) is held  # one copy of the block


def test_hits_need_no_request(disk) -> None:
    k, d, _ = disk
    bc = k.bcache
    bc.bread(d.bdev, 3, BS)
    before = d.device.requests
    for _ in range(10):
        bc.bread(d.bdev, 3, BS)
    assert d.device.requests == before


def test_dirty_buffers_are_written_back_merged(disk) -> None:
    k, d, path = disk
    bc = k.bcache
    bufs = bc.bread_many(d.bdev, 10, 8, BS)
    for b in bufs:
        b.data[:4] = b"DIRT"
        bc.mark_dirty(b)
    assert len(bc.dirty_buffers(d.bdev)) == 8
    with open(path, "rb") as f:
        f.seek(10 * BS)
        assert f.read(4) != b"DIRT"
    before = d.device.requests
    bc.sync(d.bdev)
    # eight contiguous dirty blocks: one write request, then one flush
    assert d.device.requests - before == 2
    assert d.device.backend.flushes == 1
    assert bc.dirty_buffers(d.bdev) == []
    with open(path, "rb") as f:
        for i in range(8):
            f.seek((10 + i) * BS)
            assert f.read(BS) == b"DIRT" + _block(10 + i)[4:]


def test_eviction_writes_dirty_buffers_back_first(disk) -> None:
    k, d, path = disk
    bc = k.bcache
    b = bc.bread(d.bdev, 1, BS)
    b.data[:5] = b"SAVED"
    bc.mark_dirty(b)
    del b
    for i in range(100, 140):
        bc.bread(d.bdev, i, BS)
    assert bc.peek(d.bdev, 1, BS) is None
    with open(path, "rb") as f:
        f.seek(BS)
        assert f.read(5) == b"SAVED"
    assert bytes(bc.bread(d.bdev, 1, BS).data[:5]) == b"SAVED"


def test_bread_many_reads_misses_in_one_request(disk) -> None:
    k, d, _ = disk
    bc = k.bcache
    bc.bread(d.bdev, 52, BS)  # a hit in the middle splits the misses in two runs
    before = d.device.requests
    bufs = bc.bread_many(d.bdev, 50, 6, BS)
    assert [bytes(b.data) for b in bufs] == [_block(i) for i in range(50, 56)]
    assert d.device.requests - before == 2


def test_forget_drops_without_writing(disk) -> None:
    k, d, path = disk
    bc = k.bcache
    b = bc.bread(d.bdev, 7, BS)
    b.data[:4] = b"GONE"
    bc.mark_dirty(b)
    bc.forget(d.bdev, 7, BS)
    bc.sync(d.bdev)
    with open(path, "rb") as f:
        f.seek(7 * BS)
        assert f.read(BS) == _block(7)


def test_large_reads_bypass_the_cache_in_few_requests(tmp_path) -> None:
    path = _image(tmp_path / "big.img", 4096)  # 16 MiB
    with Kernel(mb=1) as k:
        d = k.disk_add(path, readonly=True)
        buf = bytearray(16 << 20)
        before = d.device.requests
        d.bdev.readv(0, [buf])
        # 16 MiB in requests of at most 4 MiB: four requests, not 4096
        assert d.device.requests - before == 4
        assert k.bcache.bytes == 0
        mv = memoryview(buf)
        for i in (0, 1, 2047, 4095):
            assert mv[i * BS:(i + 1) * BS] == _block(i)


def test_small_reads_share_a_readahead_window_and_writes_invalidate_it(tmp_path) -> None:
    path = _image(tmp_path / "ra.img", 256)
    with Kernel(mb=1) as k:
        d = k.disk_add(path)
        bdev = d.bdev
        before = d.device.requests
        for i in range(32):  # 32 neighbouring 4 KiB reads: one 128 KiB window
            buf = bytearray(BS)
            bdev.read_small(i * BS, memoryview(buf))
            assert bytes(buf) == _block(i)
        assert d.device.requests - before == 1
        bdev.write(5 * BS, b"N" * BS)
        buf = bytearray(BS)
        bdev.read_small(5 * BS, memoryview(buf))
        assert bytes(buf) == b"N" * BS  # never a stale window
        # a read spanning two windows
        buf = bytearray(2 * BS)
        bdev.read_small(31 * BS, memoryview(buf))
        assert bytes(buf) == _block(31) + _block(32)


def test_write_many_merges_writes_that_meet(tmp_path) -> None:
    """A batch of writes in any order: those that meet end to end go out as one request
    (split only at the request size limit), the rest on their own; every byte lands."""
    img = tmp_path / "d.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    pieces = {
        # 32 one-block writes laid end to end from 64 KiB, given out of order
        **{65536 + 4096 * i: bytes([i + 1]) * 4096 for i in range(32)},
        # two writes that do not touch the run or each other
        1 << 20: b"x" * 512,
        (2 << 20) + 4096: b"y" * 8192,
    }
    order = sorted(pieces, key=lambda o: (o * 7919) % 1009)
    with Kernel(mb=8) as k:
        d = k.disk_add(img)
        before = d.device.requests
        d.bdev.write_many([(o, [memoryview(pieces[o])]) for o in order])
        assert d.device.requests - before == 3
        # 1 MiB of adjacent writes is more than one request may carry: split at the limit
        big = [((3 << 20) + 65536 * i, [memoryview(bytes([0x80 + i]) * 65536)]) for i in range(24)]
        before = d.device.requests
        d.bdev.write_many([(o, b) for o, b in reversed(big)])
        limit = d.bdev.disk.limits.max_sectors * 512
        assert d.device.requests - before == -(-24 * 65536 // limit)
    raw = img.read_bytes()
    for o, data in pieces.items():
        assert raw[o:o + len(data)] == data
    for i in range(24):
        o = (3 << 20) + 65536 * i
        assert raw[o:o + 65536] == bytes([0x80 + i]) * 65536
