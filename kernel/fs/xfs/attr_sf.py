"""Short-form attribute forks stored in the inode (libxfs/xfs_attr_sf.c).

Header {totsize 16, count 8, pad 8}; then per attribute {namelen 8,
valuelen 8, flags 8, name, value}.
"""

from __future__ import annotations

from ...errors import corrupted
from . import ondisk as od


def parse_sf(data: memoryview, forksize: int, what: str) -> list[tuple[int, bytes, bytes]]:
    """[(flags, name, value)]; EUCLEAN when entries overrun ``totsize`` or the fork."""
    if forksize < 4:
        raise corrupted(what, "attribute fork too small")
    totsize, count, _pad = od.xfs_attr_sf_hdr.struct.unpack_from(data, 0)
    if totsize < 4 or totsize > forksize:
        raise corrupted(what, f"short-form attributes of bad size {totsize}")
    out: list[tuple[int, bytes, bytes]] = []
    p = 4
    for _ in range(count):
        if p + 3 > totsize:
            raise corrupted(what, "short-form attribute entries overrun their size")
        namelen, valuelen, flags = data[p], data[p + 1], data[p + 2]
        end = p + 3 + namelen + valuelen
        if namelen == 0 or end > totsize:
            raise corrupted(what, f"bad short-form attribute at byte {p}")
        name = bytes(data[p + 3:p + 3 + namelen])
        out.append((flags, name, bytes(data[p + 3 + namelen:end])))
        p = end
    return out
