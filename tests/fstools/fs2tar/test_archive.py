"""The tar writer in memory mode (fs2tar's workers): the same bytes as writing to a file.

Memory mode writes entries into a buffer it starts again between entries, sends an
entry too big for the buffer through a writer that calls back with each write, and hands
the data of a big plain entry on as it comes (libarchive writes only its header); the
pieces, joined, must be the archive a file writer makes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from fstools.fs2tar.archive import TarWriter


def _entries(w: TarWriter, rnd: random.Random) -> None:
    big = TarWriter.MEMORY + (3 << 20)  # more than the buffer holds
    plan = [("small", 1000)] * 50 + [("big", big)] + [("mid", 200_000)] * 120 + \
        [("sparse", 0), ("xattrs", 5000), ("big", big), ("small", 10), ("short", 300_000),
         ("exact", TarWriter.DIRECT), ("under", TarWriter.DIRECT - 1), ("link", 500_000),
         ("xattrs", 1 << 20), ("small", 10)]
    for i, (kind, size) in enumerate(plan):
        path = b"./%s-%04d" % (kind.encode(), i)
        if kind == "sparse":
            regions = [(k * 8192, 512) for k in range(3000)]  # a long map
            logical = 3000 * 8192
            w.begin(path, 0o100644, 0, 0, logical, 10**18, None, None)
            for off, n in regions:
                w.add_sparse(off, n)
            w.write_header()
            pos = 0
            for off, n in regions:
                w.write_zeros(off - pos)
                w.write(bytes([i % 251]) * n)
                pos = off + n
            w.write_zeros(logical - pos)
            w.finish_entry()
            continue
        w.begin(path, 0o100644, 1000 + i, 1000, size, 10**18 + i, 10**18, 10**18)
        if kind == "link":
            w.set_hardlink(b"./mid-0100")
            size = 0
        if kind == "xattrs":
            for k in range(40):
                w.add_xattr(b"user.attr%d" % k, rnd.randbytes(1000))
            w.add_acl(0x100, [(1, 6, 0), (2, 7, 1234), (4, 4, 0), (0x10, 7, 0), (0x20, 4, 0)])
        w.write_header()
        left = size if kind != "short" else size // 3  # libarchive writes zeros for the rest
        while left:
            n = min(left, 1 << 20)
            chunk = rnd.randbytes(n) if kind != "big" else bytes(n)
            # every kind of buffer a caller hands over: bytes, bytearray, views of either
            w.write([chunk, bytearray(chunk), memoryview(chunk),
                     memoryview(bytearray(chunk))[:n]][i % 4])
            left -= n
        w.finish_entry()


def test_memory_mode_writes_the_file_writers_bytes(tmp_path: Path) -> None:
    pieces: list[bytes] = []
    mem = TarWriter(None, "pax", spill=lambda view: pieces.append(bytes(view)))
    _entries(mem, random.Random(5))
    mem.flush()
    assert mem._cb_a is not None  # the big entries went through the calling-back writer
    mem.abort()
    out = tmp_path / "file.tar"
    ref = TarWriter(os.fspath(out), "pax")
    _entries(ref, random.Random(5))
    ref.close()
    joined = b"".join(pieces) + bytes(1024)
    want = out.read_bytes()
    assert len(joined) == len(want) and joined == want
    assert len(pieces) > 20  # handed on as it went, not at the end


def test_big_entries_data_is_not_copied() -> None:
    """Memory mode hands a big plain entry's data on in the caller's own buffer."""
    pieces: list[memoryview] = []
    mem = TarWriter(None, "pax", spill=pieces.append)
    data = bytearray(random.Random(1).randbytes(3 * TarWriter.DIRECT + 100))
    mem.begin(b"./f", 0o100644, 0, 0, len(data), 10**18)
    mem.write_header()
    mem.write(memoryview(data))
    mem.finish_entry()
    mem.flush()
    mem.abort()
    assert any(p.obj is data for p in pieces)
    joined = b"".join(bytes(p) for p in pieces)
    assert joined[-(len(data) + 412):-412] == data and joined.endswith(bytes(412))


def _described(fmt: str, out: Path) -> list[str]:
    """Entries of every kind and edge of mode, owner, size and time, written to ``out``;
    the entries libarchive refused (the format cannot hold them)."""
    from fstools.fs2tar.archive import ArchiveWriteError

    w = TarWriter(os.fspath(out), fmt)
    refused = []
    times = [0, 1, 10**18 + 7, 2**33 * 10**9 + 999_999_999, -1, -10**9, -(10**12) - 5,
             -(2**33) * 10**9]
    owners = [(0, 0), (1000, 100), (2**21 - 1, 2**21), (2**32 - 2, 2**32 - 1)]
    i = 0
    for mode in (0o100644, 0o104755, 0o41777, 0o120777, 0o20620, 0o60660, 0o10600):
        for t in times:
            for uid, gid in owners:
                i += 1
                path = b"./e%05d" % i
                size = (i * 37) % 3000 if mode >> 12 == 0o10 else 0
                try:
                    w.begin(path, mode, uid, gid, size, t, t + i, -t if t else i,
                            t - 3 if i % 3 == 0 else None)
                    if mode >> 12 == 0o12:
                        w.set_symlink(b"target-%d" % i)
                    elif mode >> 12 in (0o2, 0o6):
                        w.set_rdev(i % 4096, i * 7 % (1 << 20))
                    if i % 5 == 0:
                        w.add_xattr(b"user.k", b"v%d" % i)
                    w.write_header()
                    w.write(bytes([i % 256]) * size)
                    w.finish_entry()
                except ArchiveWriteError as e:
                    if e.fatal:
                        raise
                    refused.append(f"{path!r}: {e}")
    w.close()
    return refused


def test_an_entry_described_in_one_call_is_the_same(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Mode, owner, size and times set through one struct stat (entry_copy_stat) give the
    bytes that setting each field gives, in every format, errors included."""
    from fstools.fs2tar import archive

    assert archive._STAT is not None  # this machine's struct stat is known and checked
    for fmt in ("pax", "gnu", "ustar"):
        fast = _described(fmt, tmp_path / f"fast-{fmt}.tar")
        with monkeypatch.context() as m:
            m.setattr(archive, "_STAT", None)
            slow = _described(fmt, tmp_path / f"slow-{fmt}.tar")
        assert fast == slow
        a = (tmp_path / f"fast-{fmt}.tar").read_bytes()
        b = (tmp_path / f"slow-{fmt}.tar").read_bytes()
        assert len(a) > 30_000 and a == b, fmt


def test_libarchive_is_bound_without_libarchive_c(tmp_path: Path) -> None:
    """The writer loads the C library by its soname: libarchive-c's package (and the
    ``ldconfig -p`` its search runs) stays out of a tool's start-up; with the soname
    missing, ``$LIBARCHIVE`` and then libarchive-c still find it. Every format and
    compression binds, and an unknown one is a clean error."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fstools.fs2tar.archive import TarWriter, ArchiveWriteError\n"
        "for fmt in ('pax', 'gnu', 'ustar'):\n"
        "    for comp in (None, 'gzip', 'xz', 'zstd', 'bzip2'):\n"
        f"        w = TarWriter({str(tmp_path / 'a.tar')!r}, fmt, comp)\n"
        "        w.close()\n"
        "try:\n"
        f"    TarWriter({str(tmp_path / 'b.tar')!r}, 'nosuch')\n"
        "except ArchiveWriteError as e:\n"
        "    print(e)\n"
        "print('libarchive' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["the write format 'nosuch' is not available in this libarchive", "False"]
