"""Writes and flushes issued behind (``wait=False``): a disk thread performs them in issue
order while the caller goes on; every later request of the disk sees their result, and a
failure among them is reported, then and afterwards."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import Kernel
from kernel.block.blkdev import BEHIND_BYTES, REQ_OP_READ, REQ_OP_WRITE, Bio

MIB = 1 << 20


def _image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _big_batch(mark: int, size: int = 16 * MIB, base: int = 8 * MIB):
    """One batch of writes covering ``size`` bytes from ``base`` (the thread is busy with
    it for a while), every 4 KiB block starting with ``mark``."""
    block = bytes([mark]) * 4096
    return [(base + off, [memoryview(block)]) for off in range(0, size, 4096)]


def test_writes_behind_land_in_issue_order(tmp_path: Path) -> None:
    img = _image(tmp_path / "d.img", 64 * MIB)
    with Kernel(mb=8) as k:
        bdev = k.disk_add(img).bdev
        # the same sectors written again and again, each batch behind the one before
        for i in range(200):
            bdev.write_many([(4096, [memoryview(bytes([i]) * 4096)]),
                             (MIB + 512 * i, [memoryview(bytes([i]) * 512)])], wait=False)
            if i % 50 == 0:
                bdev.flush(wait=False)
        assert bdev.read(4096, 4096) == bytes([199]) * 4096
        bdev.drain()
    with open(img, "rb") as f:
        f.seek(4096)
        assert f.read(4096) == bytes([199]) * 4096
        f.seek(MIB)
        assert f.read(512 * 200) == b"".join(bytes([i]) * 512 for i in range(200))


def test_a_read_waits_for_pending_writes_of_its_sectors(tmp_path: Path) -> None:
    img = _image(tmp_path / "d.img", 64 * MIB)
    with Kernel(mb=8) as k:
        bdev = k.disk_add(img).bdev
        bdev.write(0, b"old!" * 1024)
        bdev.write_many(_big_batch(0xAA), wait=False)  # keeps the thread busy
        bdev.write_many([(0, [memoryview(b"new!" * 1024)])], wait=False)
        # (reads of other sectors may pass pending writes; this one may not)
        assert bdev.read(0, 4096) == b"new!" * 1024
        assert bdev.read(8 * MIB + 16 * MIB - 4096, 4096) == b"\xaa" * 4096
        wb = k.disks[0].gendisk._behind
        assert wb is not None and not wb.pending and wb.bytes == 0


def test_issuing_behind_is_bounded(tmp_path: Path) -> None:
    img = _image(tmp_path / "d.img", 256 * MIB)
    with Kernel(mb=8) as k:
        disk = k.disk_add(img)
        most = 0
        for i in range(8):  # 8 x 16 MiB issued as fast as the caller can
            disk.bdev.write_many(_big_batch(i + 1, base=16 * MIB * (i + 1)), wait=False)
            wb = disk.gendisk._behind
            assert wb is not None
            most = max(most, wb.bytes)
        assert most <= BEHIND_BYTES + 16 * MIB
        disk.bdev.drain()
    with open(img, "rb") as f:
        for i in range(8):
            f.seek(16 * MIB * (i + 2) - 4096)
            assert f.read(4096) == bytes([i + 1]) * 4096


@contextlib.contextmanager
def _host_refuses_writes_past(limit: int) -> Iterator[None]:
    """Host writes past ``limit`` bytes of any file fail (EFBIG), as on a full host disk."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_failed_write_behind_is_reported_and_stops_what_follows(tmp_path: Path) -> None:
    img = _image(tmp_path / "d.img", 64 * MIB)
    with Kernel(mb=8) as k, _host_refuses_writes_past(4 * MIB):
        bdev = k.disk_add(img).bdev
        bdev.write_many([(8 * MIB, [memoryview(b"x" * 4096)])], wait=False)  # fails
        bdev.write_many([(0, [memoryview(b"y" * 4096)])], wait=False)  # must not land
        with pytest.raises(OSError) as e:
            bdev.drain()
        assert e.value.errno == errno.EIO
        assert "/dev/vda" in str(e.value) and "issued earlier failed" in str(e.value)
        # the disk stays failed: what depends on the lost writes cannot go on as if not
        for later in (lambda: bdev.read(0, 4096), lambda: bdev.flush(),
                      lambda: bdev.write_many([(0, [memoryview(b"z" * 512)])], wait=False)):
            with pytest.raises(OSError) as e:
                later()
            assert e.value.errno == errno.EIO
    with open(img, "rb") as f:
        assert f.read(4096) == bytes(4096)


def test_threads_share_the_ring(tmp_path: Path) -> None:
    """Requests as large as the ring allows, from two threads at once (a caller and the
    write-behind thread): each waits for room instead of failing."""
    img = _image(tmp_path / "d.img", 64 * MIB)
    errors: list[BaseException] = []
    with Kernel(mb=8) as k:
        gd = k.disk_add(img).gendisk
        nseg = gd.limits.max_segments

        def writer(t: int) -> None:
            try:
                for i in range(40):
                    segs = [memoryview(bytes([t * 64 + i % 64]) * 512) for _ in range(nseg)]
                    gd.submit([Bio(REQ_OP_WRITE, (t * 40 + i) * nseg, segs)])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for t in range(2):
            for i in (0, 39):
                buf = bytearray(512 * nseg)
                gd.submit([Bio(REQ_OP_READ, (t * 40 + i) * nseg, [memoryview(buf)])])
                assert buf == bytes([t * 64 + i % 64]) * (512 * nseg)


def test_fork_waits_for_the_writes_behind(tmp_path: Path) -> None:
    img = _image(tmp_path / "d.img", 64 * MIB)
    with Kernel(mb=8) as k:
        bdev = k.disk_add(img).bdev
        bdev.write_many(_big_batch(0x5A), wait=False)
        pid = os.fork()
        if pid == 0:  # the child sees every write on the image, none left in flight
            code = 1
            try:
                with open(img, "rb") as f:
                    f.seek(8 * MIB + 16 * MIB - 4096)
                    code = 0 if f.read(4096) == b"\x5a" * 4096 else 3
            finally:
                os._exit(code)
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
