"""Short-form directories stored in the inode (libxfs/xfs_dir2_sf.c).

Header {count 8, i8count 8, parent 32 or 64}; then per entry {namelen 8,
offset 16, name, [ftype 8], inumber 32 or 64}. Inode numbers are 8 bytes
wide when any entry (i8count) needs more than 32 bits. Offsets mirror where
the entry would sit in a block-form directory and serve as readdir cookies.
"""

from __future__ import annotations

import struct

from ...errors import corrupted
from .dir2_data import entsize

_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")


def parse_sf(data: memoryview, size: int, ftype: bool, what: str,
             ) -> tuple[int, list[tuple[int, bytes, int, int]]]:
    """(parent inode, [(offset, name, ino, ftype)]) of a short-form directory.

    Raises EUCLEAN when the structure overruns ``size`` bytes, offsets are not
    increasing or counts disagree.
    """
    if size < 6 or size > len(data):
        raise corrupted(what, f"short-form directory of bad size {size}")
    count, i8count = data[0], data[1]
    wide = i8count != 0
    isz = 8 if wide else 4
    hdr = 2 + isz
    if size < hdr:
        raise corrupted(what, "short-form header overruns the fork")
    parent = (_u64 if wide else _u32).unpack_from(data, 2)[0]
    out: list[tuple[int, bytes, int, int]] = []
    p = hdr
    last_off = 0
    n8 = 0
    extra = 1 if ftype else 0
    for _ in range(count):
        if p + 3 > size:
            raise corrupted(what, "short-form entries overrun the fork")
        namelen = data[p]
        off = _u16.unpack_from(data, p + 1)[0]
        end = p + 3 + namelen + extra + isz
        if namelen == 0 or end > size:
            raise corrupted(what, f"bad short-form entry at byte {p}")
        if off < last_off:
            raise corrupted(what, "short-form entry offsets out of order")
        last_off = off + entsize(namelen, ftype)
        name = bytes(data[p + 3:p + 3 + namelen])
        ft = data[p + 3 + namelen] if ftype else 0
        ino = (_u64 if wide else _u32).unpack_from(data, p + 3 + namelen + extra)[0]
        if ino > 0xFFFFFFFF:
            n8 += 1
        out.append((off, name, ino, ft))
        p = end
    if p != size:
        raise corrupted(what, f"short-form size {size} does not match its {count} entries")
    if wide and n8 == 0 and parent <= 0xFFFFFFFF and i8count > count + 1:
        raise corrupted(what, "bad i8count")
    return parent, out
