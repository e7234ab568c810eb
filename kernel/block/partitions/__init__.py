"""Partition tables: MBR (msdos, with extended and logical partitions) and GPT.

``scan(bdev)`` returns the partitions Linux would create for a whole disk,
numbered as Linux numbers them: MBR primaries 1-4, logicals from 5; GPT
entries by their slot. A protective MBR hands over to GPT.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..blkdev import BlockDevice


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # in 512-byte sectors from the start of the disk
    size: int  # in 512-byte sectors
    type: str  # "0x83" for MBR, the type GUID for GPT
    type_name: str  # "Linux", "Linux filesystem", "EFI System"...
    name: str = ""  # GPT partition name
    extended: bool = False  # an MBR extended container (not mountable)

    def describe(self) -> str:
        size = _human(self.size * 512)
        label = f" \"{self.name}\"" if self.name else ""
        return f"partition {self.number}: {self.type_name} ({self.type}){label}, {size}"


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class PartitionTableError(Exception):
    """A table is present but damaged; the message says what is wrong."""


def scan(bdev: BlockDevice) -> tuple[str | None, list[Partition]]:
    """Return ``(table_type, partitions)``; ``(None, [])`` when there is no table.

    Raises ``PartitionTableError`` for a table that is recognisable but damaged
    beyond use (for instance a GPT whose both headers fail their checksums).
    """
    from . import efi, msdos

    if bdev.size < 1024:
        return None, []
    sector0 = bytes(bdev.read(0, 512))
    if not msdos.has_signature(sector0):
        return None, []
    if msdos.is_protective(sector0):
        parts = efi.parse(bdev)
        if parts is not None:
            return "gpt", parts
    parts = msdos.parse(bdev, sector0)
    if parts is None:
        return None, []
    return "dos", parts
