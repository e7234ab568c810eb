"""Declare on-disk structures once, with Linux's field names.

A ``CStruct`` wraps one precompiled ``struct.Struct`` and a namedtuple type, so
reading a structure out of a cached block is one ``unpack_from`` on a
``memoryview`` and one tuple construction. Single fields can be read or
written in place through per-field ``Struct`` objects, which is what the write
paths use to update a counter without re-packing the whole structure.

Example::

    ext4_extent_header = CStruct("ext4_extent_header", "<", [
        ("eh_magic", "H"), ("eh_entries", "H"), ("eh_max", "H"),
        ("eh_depth", "H"), ("eh_generation", "I"),
    ], size=12)
    hdr = ext4_extent_header.unpack_from(block, 0)
    hdr.eh_depth
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Iterable, Sequence
from typing import Any

Buffer = bytes | bytearray | memoryview


class CStruct:
    """A named, fixed-layout structure; ``size`` is asserted when given."""

    __slots__ = ("name", "struct", "size", "names", "offsets", "record", "_fields", "_defaults")

    def __init__(
        self,
        name: str,
        byteorder: str,
        fields: Sequence[tuple[str, str]],
        size: int | None = None,
    ) -> None:
        self.name = name
        fmt = byteorder
        names: list[str] = []
        self.offsets: dict[str, int] = {}
        self._fields: dict[str, struct.Struct] = {}
        offset = 0
        for fname, ffmt in fields:
            one = struct.Struct(byteorder + ffmt)
            if not ffmt.endswith("x"):
                names.append(fname)
                self.offsets[fname] = offset
                self._fields[fname] = one
            offset += one.size
            fmt += ffmt
        self.struct = struct.Struct(fmt)
        if self.struct.size != offset:  # pragma: no cover - only with native alignment
            raise AssertionError(f"{name}: layout has implicit padding")
        if size is not None and self.struct.size != size:
            raise AssertionError(f"{name}: size {self.struct.size}, expected {size}")
        self.size = self.struct.size
        self.names = tuple(names)
        self.record: Any = namedtuple(name, names)  # type: ignore[misc]
        self._defaults = tuple(
            b"" if self._fields[n].format.endswith("s") else 0 for n in names
        )

    def unpack_from(self, buf: Buffer, offset: int = 0) -> Any:
        return self.record._make(self.struct.unpack_from(buf, offset))

    def unpack(self, data: Buffer) -> Any:
        return self.record._make(self.struct.unpack(data))

    def iter_unpack(self, buf: Buffer) -> Iterable[Any]:
        make = self.record._make
        return (make(t) for t in self.struct.iter_unpack(buf))

    def pack(self, rec: Any = None, **values: Any) -> bytes:
        if rec is None:
            rec = self.new(**values)
        elif values:
            rec = rec._replace(**values)
        return self.struct.pack(*rec)

    def pack_into(self, buf: Buffer, offset: int, rec: Any = None, **values: Any) -> None:
        if rec is None:
            rec = self.new(**values)
        elif values:
            rec = rec._replace(**values)
        self.struct.pack_into(buf, offset, *rec)  # type: ignore[arg-type]

    def new(self, **values: Any) -> Any:
        """A record with every field zero (or empty) except those given."""
        return self.record._make(self._defaults)._replace(**values)

    def get(self, buf: Buffer, offset: int, field: str) -> Any:
        """Read one field of the structure at ``offset``."""
        return self._fields[field].unpack_from(buf, offset + self.offsets[field])[0]

    def set(self, buf: Buffer, offset: int, field: str, value: Any) -> None:
        """Write one field of the structure at ``offset`` in place."""
        self._fields[field].pack_into(buf, offset + self.offsets[field], value)  # type: ignore[arg-type]

    def offset_of(self, field: str) -> int:
        return self.offsets[field]

    def __repr__(self) -> str:
        return f"<CStruct {self.name} size={self.size}>"
