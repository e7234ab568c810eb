"""Checksums, all computed by compiled libraries (never a Python loop).

* ``crc32c(data, crc=0)``: the standard CRC-32C (Castagnoli), pre- and
  post-inverted, as btrfs and xfs store it; ``crc`` continues a previous result.
* ``crc32c_raw(seed, data)``: Linux's ``crc32c_le(seed, data)`` with neither
  inversion, as ext4 and jbd2 chain it (``ext4_chksum``).
* ``crc16(seed, data)``: Linux's ``crc16()`` (polynomial 0x8005 reflected, no
  inversion), used by ext4 group descriptors without metadata_csum.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from typing import Any

import crcmod as _crcmod


def _load_crc32c() -> Callable[..., int]:
    """The crc32c package's compiled function. Its ``__init__`` asks importlib.metadata for
    the package version, which costs a tool's start-up some 30 ms; the extension module is
    loaded on its own when it can be found, else the package is imported as usual."""
    try:
        spec = importlib.util.find_spec("crc32c")
        where = spec.submodule_search_locations if spec is not None else None
        ext = importlib.machinery.PathFinder.find_spec("_crc32c", list(where or ()))
        if ext is not None and isinstance(ext.loader, importlib.machinery.ExtensionFileLoader):
            ext.name = "crc32c._crc32c"
            mod: Any = importlib.util.module_from_spec(ext)
            ext.loader.exec_module(mod)
            return mod.crc32c  # type: ignore[no-any-return]
    except (ImportError, AttributeError, OSError):
        pass
    import crc32c

    return crc32c.crc32c  # type: ignore[no-any-return]


_std = _load_crc32c()

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
