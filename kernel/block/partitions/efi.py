"""GUID Partition Tables (UEFI specification, chapter 5).

The primary header lives at LBA 1, the backup at the disk's last LBA. Each
header carries a CRC32 of itself (with the CRC field zeroed) and of the entry
array; a header that fails either check is not used, and the backup stands
in for a damaged primary, as Linux's efi.c does. Partition N is entry N-1.
"""

from __future__ import annotations

import uuid
import zlib

from ...lib.cstruct import CStruct
from ..blkdev import BlockDevice
from . import Partition, PartitionTableError

gpt_header = CStruct("gpt_header", "<", [
    ("signature", "8s"), ("revision", "I"), ("header_size", "I"), ("header_crc32", "I"),
    ("reserved1", "I"), ("my_lba", "Q"), ("alternate_lba", "Q"), ("first_usable_lba", "Q"),
    ("last_usable_lba", "Q"), ("disk_guid", "16s"), ("partition_entry_lba", "Q"),
    ("num_partition_entries", "I"), ("sizeof_partition_entry", "I"),
    ("partition_entry_array_crc32", "I"),
], size=92)

gpt_entry = CStruct("gpt_entry", "<", [
    ("partition_type_guid", "16s"), ("unique_partition_guid", "16s"), ("starting_lba", "Q"),
    ("ending_lba", "Q"), ("attributes", "Q"), ("partition_name", "72s"),
], size=128)

SIGNATURE = b"EFI PART"
SECTOR = 512
MAX_ENTRIES = 4096

TYPE_NAMES = {
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "44479540-f297-41b2-9af7-d131d5f0458a": "Linux root (x86)",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM-64)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "3b8f8425-20e0-4f3b-907f-1a25a76f98e8": "Linux server data",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
}


def _header(bdev: BlockDevice, lba: int) -> tuple[object, list[Partition]] | None:
    nsect = bdev.size // SECTOR
    if lba <= 0 or lba >= nsect:
        return None
    raw = bytes(bdev.read(lba * SECTOR, SECTOR))
    hdr = gpt_header.unpack_from(raw)
    if hdr.signature != SIGNATURE or not 92 <= hdr.header_size <= SECTOR:
        return None
    check = bytearray(raw[:hdr.header_size])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != hdr.header_crc32 or hdr.my_lba != lba:
        return None
    if (hdr.sizeof_partition_entry < 128 or hdr.sizeof_partition_entry % 8
            or not 0 < hdr.num_partition_entries <= MAX_ENTRIES):
        return None
    length = hdr.num_partition_entries * hdr.sizeof_partition_entry
    start = hdr.partition_entry_lba * SECTOR
    if start + length > bdev.size or hdr.partition_entry_lba == 0:
        return None
    arr = bytes(bdev.read(start, (length + SECTOR - 1) // SECTOR * SECTOR))[:length]
    if zlib.crc32(arr) != hdr.partition_entry_array_crc32:
        return None
    parts = []
    for i in range(hdr.num_partition_entries):
        e = gpt_entry.unpack_from(arr, i * hdr.sizeof_partition_entry)
        if e.partition_type_guid == bytes(16):
            continue
        if e.ending_lba < e.starting_lba or e.starting_lba >= nsect:
            continue
        end = min(e.ending_lba, nsect - 1)
        tguid = str(uuid.UUID(bytes_le=e.partition_type_guid))
        name = e.partition_name.decode("utf-16-le", "replace").split("\0", 1)[0]
        parts.append(Partition(i + 1, e.starting_lba, end - e.starting_lba + 1, tguid.upper(),
                               TYPE_NAMES.get(tguid, "unknown type"), name))
    return hdr, parts


def parse(bdev: BlockDevice) -> list[Partition] | None:
    """The GPT partitions, or None if there is no usable GPT (then MBR rules apply)."""
    primary = _header(bdev, 1)
    if primary is not None:
        return primary[1]
    backup = _header(bdev, bdev.size // SECTOR - 1)
    if backup is not None:
        return backup[1]
    raw = bytes(bdev.read(SECTOR, SECTOR))
    if raw[:8] == SIGNATURE:
        raise PartitionTableError("GPT headers at LBA 1 and at the last LBA are both damaged")
    return None
