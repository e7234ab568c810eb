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
