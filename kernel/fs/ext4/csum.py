"""ext4 metadata checksums (metadata_csum: crc32c; uninit_bg: crc16).

Every function returns the value as stored on disk; the caller compares. The
crc32c is Linux's raw ``ext4_chksum`` chaining (``crc32c_raw``): no final
inversion, seeded with the filesystem's ``s_csum_seed`` or a per-inode seed.
"""

from __future__ import annotations

import struct

from ...lib.crc import crc16, crc32c_raw
from .ondisk import BG_CHECKSUM_OFFSET, I_CHECKSUM_HI_OFFSET, I_CHECKSUM_LO_OFFSET, S_CHECKSUM_OFFSET

_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_ZERO2 = bytes(2)
_ZERO4 = bytes(4)

Buf = bytes | bytearray | memoryview


def fs_seed(uuid: bytes) -> int:
    """s_csum_seed: crc32c(~0, uuid) unless metadata_csum_seed stores it."""
    return crc32c_raw(0xFFFFFFFF, uuid)


def superblock_csum(raw: Buf) -> int:
    """s_checksum over the superblock up to the checksum field."""
    return crc32c_raw(0xFFFFFFFF, memoryview(raw)[:S_CHECKSUM_OFFSET])


def group_desc_csum(metadata_csum: bool, seed: int, uuid: bytes, group: int, desc: Buf) -> int:
    """bg_checksum: crc32c (low 16 bits) with metadata_csum, else crc16 (uninit_bg).

    Covers le32 group number, the descriptor with bg_checksum left out (the
    crc32c variant hashes two zero bytes in its place).
    """
    mv = memoryview(desc)
    g = _U32.pack(group)
    if metadata_csum:
        c = crc32c_raw(seed, g)
        c = crc32c_raw(c, mv[:BG_CHECKSUM_OFFSET])
        c = crc32c_raw(c, _ZERO2)
        if len(mv) > BG_CHECKSUM_OFFSET + 2:
            c = crc32c_raw(c, mv[BG_CHECKSUM_OFFSET + 2:])
        return c & 0xFFFF
    c = crc16(0xFFFF, uuid)
    c = crc16(c, g)
    c = crc16(c, mv[:BG_CHECKSUM_OFFSET])
    if len(mv) > BG_CHECKSUM_OFFSET + 2:
        c = crc16(c, mv[BG_CHECKSUM_OFFSET + 2:])
    return c


def inode_seed(seed: int, ino: int, generation: int) -> int:
    """The per-inode seed (ei->i_csum_seed) for an inode's own metadata blocks."""
    return crc32c_raw(seed, _U32X2.pack(ino, generation))


def inode_csum(iseed: int, raw: Buf, has_hi: bool) -> int:
    """The inode checksum over the whole on-disk inode, checksum fields as zero.

    Returns the full 32 bits when ``has_hi`` (i_extra_isize covers
    i_checksum_hi), else only the low 16 bits that l_i_checksum_lo holds.
    """
    b = bytearray(raw)  # one pass of the CRC over a copy with the fields zeroed
    b[I_CHECKSUM_LO_OFFSET:I_CHECKSUM_LO_OFFSET + 2] = _ZERO2
    if has_hi:
        b[I_CHECKSUM_HI_OFFSET:I_CHECKSUM_HI_OFFSET + 2] = _ZERO2
    c = crc32c_raw(iseed, b)
    return c if has_hi else c & 0xFFFF


def block_csum(iseed: int, data: Buf) -> int:
    """Extent blocks, directory leaf blocks: crc32c(inode seed, covered bytes)."""
    return crc32c_raw(iseed, data)


def dx_csum(iseed: int, block: Buf, count_offset: int, count: int, tail_offset: int) -> int:
    """An htree node: the header and ``count`` dx_entries, then the dx_tail with
    dt_checksum as zero."""
    mv = memoryview(block)
    c = crc32c_raw(iseed, mv[:count_offset + count * 8])
    c = crc32c_raw(c, mv[tail_offset:tail_offset + 4])
    return crc32c_raw(c, _ZERO4)


def bitmap_csum(seed: int, bitmap: Buf) -> int:
    """Block or inode bitmap checksum (32 bits; the descriptor may keep only 16)."""
    return crc32c_raw(seed, bitmap)


def xattr_block_csum(seed: int, blocknr: int, block: Buf) -> int:
    """An xattr block: le64 block number, then the block with h_checksum as zero."""
    mv = memoryview(block)
    c = crc32c_raw(seed, _U64.pack(blocknr))
    c = crc32c_raw(c, mv[:16])
    c = crc32c_raw(c, _ZERO4)
    return crc32c_raw(c, mv[20:])


def orphan_block_csum(seed: int, ino: int, generation: int, blocknr: int, block: Buf,
                      tail_offset: int) -> int:
    """An orphan-file block: inode seed, le64 physical block number, the entries."""
    c = crc32c_raw(inode_seed(seed, ino, generation), _U64.pack(blocknr))
    return crc32c_raw(c, memoryview(block)[:tail_offset])
