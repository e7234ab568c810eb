"""Directory data blocks (libxfs/xfs_dir2_data.c): the entries themselves.

A data block (and the data part of a single-block directory) is a header
followed by 8-byte aligned records: a used entry is {inumber 64, namelen 8,
name, [ftype 8], tag 16}; an unused one starts with the 0xffff free tag and
its length. Entries are addressed by their byte offset in the directory's
data space (``dataptr`` = offset >> 3).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ...errors import corrupted
from . import ondisk as od

_u16 = struct.Struct(">H")
_u64 = struct.Struct(">Q")
_free = struct.Struct(">HH")


def entsize(namelen: int, ftype: bool) -> int:
    """xfs_dir2_data_entsize: the aligned size of an entry with a name of ``namelen``."""
    return (8 + 1 + namelen + (1 if ftype else 0) + 2 + 7) & ~7


_MIN_ENTRY = entsize(1, True)  # the smallest used entry: 16 bytes, with or without ftype


def iter_entries(data: memoryview, start: int, end: int, ftype: bool, hdr: int, what: str,
                 ) -> Iterator[tuple[int, bytes, int, int, int]]:
    """Used entries from byte ``start`` to ``end``: (offset, name, ino, ftype, size).

    Walks from the header so that ``start`` needs to be no entry boundary;
    EUCLEAN names the block when a record overruns it.
    """
    p = hdr
    extra = 1 if ftype else 0
    end = min(end, len(data))
    while p < end:
        if end - p < 8:
            raise corrupted(what, f"truncated record at offset {p}")
        tag, length = _free.unpack_from(data, p)
        if tag == od.XFS_DIR2_DATA_FREE_TAG:
            if length < 8 or length & 7 or p + length > end:
                raise corrupted(what, f"bad free record at offset {p} (length {length})")
            p += length
            continue
        if end - p < _MIN_ENTRY:
            raise corrupted(what, f"truncated entry at offset {p}")
        namelen = data[p + 8]
        size = (11 + namelen + extra + 7) & ~7
        if namelen == 0 or p + size > end:
            raise corrupted(what, f"bad entry at offset {p} (name length {namelen})")
        if p >= start:
            ino = _u64.unpack_from(data, p)[0]
            ft = data[p + 9 + namelen] if ftype else 0
            yield p, bytes(data[p + 9:p + 9 + namelen]), ino, ft, size
        p += size


def entry_at(data: memoryview, off: int, end: int, ftype: bool, hdr: int, what: str,
             ) -> tuple[bytes, int, int]:
    """The used entry at byte ``off``: (name, ino, ftype); EUCLEAN if there is none."""
    end = min(end, len(data))
    if off < hdr or off + 12 > end or off & 7:
        raise corrupted(what, f"leaf points at bad offset {off}")
    if _u16.unpack_from(data, off)[0] == od.XFS_DIR2_DATA_FREE_TAG:
        raise corrupted(what, f"leaf points at a free record at offset {off}")
    namelen = data[off + 8]
    size = (11 + namelen + (1 if ftype else 0) + 7) & ~7
    if namelen == 0 or off + size > end:
        raise corrupted(what, f"bad entry at offset {off}")
    ino = _u64.unpack_from(data, off)[0]
    ft = data[off + 9 + namelen] if ftype else 0
    return bytes(data[off + 9:off + 9 + namelen]), ino, ft


def check_magic(data: memoryview, magics: tuple[int, ...], what: str) -> None:
    magic = struct.unpack_from(">I", data, 0)[0]
    if magic not in magics:
        raise corrupted(what, f"bad magic {magic:#x}")
