"""Checksums, all computed by compiled libraries (never a Python loop).

* ``crc32c(data, crc=0)``: the standard CRC-32C (Castagnoli), pre- and
  post-inverted, as btrfs and xfs store it; ``crc`` continues a previous result.
* ``crc32c_raw(seed, data)``: Linux's ``crc32c_le(seed, data)`` with neither
  inversion, as ext4 and jbd2 chain it (``ext4_chksum``).
* ``crc16(seed, data)``: Linux's ``crc16()`` (polynomial 0x8005 reflected, no
  inversion), used by ext4 group descriptors without metadata_csum.
"""

from __future__ import annotations

import crc32c as _crc32c
import crcmod as _crcmod

_std = _crc32c.crc32c

_MASK = 0xFFFFFFFF


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    return _std(data, crc)


def crc32c_raw(seed: int, data: bytes | bytearray | memoryview) -> int:
    # The library inverts on entry and on exit; undo both to get the raw
    # register update that Linux's crc32c_le() performs.
    return _std(data, seed ^ _MASK) ^ _MASK


_crc16 = _crcmod.mkCrcFun(0x18005, initCrc=0, rev=True, xorOut=0)


def crc16(seed: int, data: bytes | bytearray | memoryview) -> int:
    return _crc16(bytes(data), seed)
