"""Decompression of btrfs extents (fs/btrfs/zlib.c, lzo.c, zstd.c: the formats).

zlib and zstd extents are one stream each. lzo extents are btrfs's own
framing: a 4-byte total length, then segments of a 4-byte length and LZO1X
data, each decompressing to at most one 4 KiB page; a segment header never
straddles a 4 KiB boundary of the compressed data (the rest of the sector is
padding when fewer than 4 bytes remain).
"""

from __future__ import annotations

import errno
import struct
import zlib

from ...errors import kerr
from .ondisk import COMPRESS_LZO, COMPRESS_ZLIB, COMPRESS_ZSTD

_U32 = struct.Struct("<I")
_LZO_SECTOR = 4096
_LZO_PAGE = 4096


def decompress(kind: int, data: bytes, out_len: int, where: str) -> bytes:
    """Up to ``out_len`` bytes of a compressed extent; EIO naming ``where`` if damaged."""
    try:
        if kind == COMPRESS_ZLIB:
            d = zlib.decompressobj()
            out = d.decompress(data, out_len)
        elif kind == COMPRESS_ZSTD:
            import zstandard

            out = zstandard.ZstdDecompressor().decompressobj().decompress(data)[:out_len]
        elif kind == COMPRESS_LZO:
            out = _lzo(data, out_len, where)
        else:
            raise kerr(errno.EOPNOTSUPP, where, f"unknown compression type {kind}")
    except OSError:
        raise
    except Exception as e:  # zlib.error, zstd.ZstdError, lzo.error: damaged data
        raise kerr(errno.EIO, where, f"cannot decompress: {e}") from None
    if len(out) < out_len:
        out += bytes(out_len - len(out))  # a short stream reads as zeros, as Linux fills
    return bytes(out)


def _lzo(data: bytes, out_len: int, where: str) -> bytes:
    import lzo

    if len(data) < 4:
        raise kerr(errno.EIO, where, "lzo extent too short")
    total = _U32.unpack_from(data, 0)[0]
    if total > len(data) or total < 4:
        raise kerr(errno.EIO, where, f"lzo extent length {total} of {len(data)} bytes")
    pos = 4
    out = bytearray()
    while pos < total and len(out) < out_len:
        left = _LZO_SECTOR - pos % _LZO_SECTOR
        if left < 4:
            pos += left  # padding: a segment header never crosses a sector
            continue
        seg = _U32.unpack_from(data, pos)[0]
        pos += 4
        if seg == 0 or pos + seg > total:
            raise kerr(errno.EIO, where, f"bad lzo segment length {seg}")
        out += lzo.decompress(data[pos:pos + seg], False, _LZO_PAGE)
        pos += seg
    return bytes(out[:out_len])
