"""MBR partition tables (Linux's block/partitions/msdos.c, from the format).

Sector 0 ends with 0x55 0xAA and holds four 16-byte entries at offset 446:
boot indicator, CHS start, system id, CHS end, LBA start (le32), sector
count (le32). Extended partitions (ids 0x05, 0x0f, 0x85) hold a chain of
extended boot records; in each, the first entry is a logical partition
relative to that record and the second links to the next record, relative to
the start of the outermost extended partition. Logical partitions are
numbered from 5.
"""

from __future__ import annotations

import struct

from ..blkdev import BlockDevice
from . import Partition

_ENTRY = struct.Struct("<B3sB3sII")
EXTENDED_IDS = (0x05, 0x0F, 0x85)
GPT_PROTECTIVE = 0xEE
MAX_LOGICAL = 256

TYPE_NAMES = {
    0x00: "Empty", 0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT", 0x0B: "W95 FAT32", 0x0C: "W95 FAT32 (LBA)", 0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Ext'd (LBA)", 0x82: "Linux swap / Solaris", 0x83: "Linux",
    0x85: "Linux extended", 0x8E: "Linux LVM", 0xA5: "FreeBSD", 0xEE: "GPT",
    0xEF: "EFI (FAT-12/16/32)", 0xFD: "Linux raid autodetect",
}


def has_signature(sector: bytes) -> bool:
    return len(sector) >= 512 and sector[510] == 0x55 and sector[511] == 0xAA


def _entries(sector: bytes) -> list[tuple[int, int, int, int]]:
    out = []
    for i in range(4):
        boot, _chs1, sysid, _chs2, start, count = _ENTRY.unpack_from(sector, 446 + 16 * i)
        out.append((boot, sysid, start, count))
    return out


def is_protective(sector: bytes) -> bool:
    return any(sysid == GPT_PROTECTIVE for _b, sysid, _s, _c in _entries(sector))


def parse(bdev: BlockDevice, sector0: bytes) -> list[Partition] | None:
    """The partitions of an MBR disk, or None if sector 0 is not a partition table.

    As Linux does, a boot sector whose entries have boot indicators other than
    0x00/0x80 (a FAT or NTFS volume boot record) is not a partition table.
    """
    entries = _entries(sector0)
    if any(boot not in (0, 0x80) for boot, _s, _st, _c in entries):
        return None
    nsect = bdev.size // 512
    parts: list[Partition] = []
    for i, (_boot, sysid, start, count) in enumerate(entries, 1):
        if sysid == 0 or count == 0:
            continue
        if start >= nsect:
            continue  # Linux warns and skips partitions beyond the disk
        count = min(count, nsect - start)
        if sysid in EXTENDED_IDS:
            # Linux exposes the extended container as a 1 KiB device.
            parts.append(Partition(i, start, min(count, 2), f"0x{sysid:02x}",
                                   TYPE_NAMES.get(sysid, "Extended"), extended=True))
            parts.extend(_logicals(bdev, start, count, nsect))
        else:
            parts.append(Partition(i, start, count, f"0x{sysid:02x}", TYPE_NAMES.get(sysid, "unknown")))
    return parts


def _logicals(bdev: BlockDevice, ext_start: int, ext_size: int, nsect: int) -> list[Partition]:
    parts: list[Partition] = []
    seen: set[int] = set()
    ebr = ext_start
    number = 5
    while len(parts) < MAX_LOGICAL and ebr not in seen and ebr < nsect:
        seen.add(ebr)
        sector = bytes(bdev.read(ebr * 512, 512))
        if not has_signature(sector):
            break
        entries = _entries(sector)
        nxt = None
        # Linux takes the first data entry as the logical partition and the
        # first extended entry as the link, whatever their slots.
        data_done = False
        for _boot, sysid, start, count in entries:
            if sysid == 0 or count == 0:
                continue
            if sysid in EXTENDED_IDS:
                if nxt is None:
                    nxt = ext_start + start
                continue
            if data_done:
                continue
            data_done = True
            first = ebr + start
            if first < nsect:
                parts.append(Partition(number, first, min(count, nsect - first), f"0x{sysid:02x}",
                                       TYPE_NAMES.get(sysid, "unknown")))
                number += 1
        if nxt is None or not (ext_start <= nxt < ext_start + ext_size):
            break
        ebr = nxt
    return parts
