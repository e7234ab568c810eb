"""Metadata checksums (libxfs/xfs_cksum.h).

XFS stores the standard CRC-32C of a structure, computed with the CRC field
itself zeroed, little-endian. A mismatch is reported as EUCLEAN naming the
structure (the issue asks for EUCLEAN rather than Linux's EFSBADCRC).
"""

from __future__ import annotations

import struct

from ...errors import corrupted
from ...lib.crc import crc32c

_ZERO4 = bytes(4)
_le32 = struct.Struct("<I")


def compute_crc(data: bytes | bytearray | memoryview, off: int) -> int:
    """CRC-32C of ``data`` with the 4-byte field at ``off`` taken as zero."""
    mv = memoryview(data)
    crc = crc32c(mv[:off])
    crc = crc32c(_ZERO4, crc)
    return crc32c(mv[off + 4:], crc)


def crc_ok(data: bytes | bytearray | memoryview, off: int) -> bool:
    return compute_crc(data, off) == _le32.unpack_from(data, off)[0]


def verify_crc(data: bytes | bytearray | memoryview, off: int, what: str) -> None:
    """EUCLEAN naming ``what`` unless the stored CRC matches."""
    if compute_crc(data, off) != _le32.unpack_from(data, off)[0]:
        raise corrupted(what, "metadata checksum mismatch")


def update_crc(data: bytearray | memoryview, off: int) -> None:
    """Store the CRC of ``data`` at ``off`` (used by log recovery in memory)."""
    _le32.pack_into(data, off, compute_crc(data, off))
