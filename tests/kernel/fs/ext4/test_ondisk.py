"""Every on-disk structure has Linux's size (ext4.h, ext4_extents.h, xattr.h, jbd2.h)."""

from __future__ import annotations

import pytest

from kernel.fs.ext4 import ondisk
from kernel.fs.ext4.jbd2 import ondisk as jbd2

SIZES = {
    "ext4_super_block": 1024, "ext4_group_desc": 64, "ext4_group_desc32": 32, "ext4_inode": 160,
    "ext4_extent_header": 12, "ext4_extent": 12, "ext4_extent_idx": 12, "ext4_extent_tail": 4,
    "ext4_dir_entry_2": 8, "ext4_dir_entry": 8, "ext4_dir_entry_tail": 12, "dx_root_info": 8,
    "dx_countlimit": 4, "dx_entry": 8, "dx_tail": 8, "ext4_xattr_header": 32,
    "ext4_xattr_ibody_header": 4, "ext4_xattr_entry": 16, "ext4_acl_header": 4,
    "ext4_acl_entry": 8, "ext4_acl_entry_short": 4, "ext4_orphan_block_tail": 8,
    "journal_header_t": 12, "journal_superblock_t": 1024, "commit_header": 60,
    "journal_block_tag3_t": 16, "journal_block_tag_t": 12, "jbd2_journal_block_tail": 4,
    "jbd2_journal_revoke_header_t": 16,
}
STRUCTS = {s.name: s for s in ondisk.ALL_STRUCTS + jbd2.ALL_STRUCTS}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_struct_size(name: str) -> None:
    assert STRUCTS[name].size == SIZES[name]


@pytest.mark.parametrize("struct_, field, offset", [
    (ondisk.ext4_super_block, "s_magic", 0x38), (ondisk.ext4_super_block, "s_uuid", 0x68),
    (ondisk.ext4_super_block, "s_desc_size", 0xFE), (ondisk.ext4_super_block, "s_flags", 0x160),
    (ondisk.ext4_super_block, "s_checksum_seed", 0x270),
    (ondisk.ext4_super_block, "s_orphan_file_inum", 0x280),
    (ondisk.ext4_super_block, "s_checksum", 0x3FC),
    (ondisk.ext4_group_desc, "bg_checksum", 0x1E), (ondisk.ext4_group_desc, "bg_inode_table_hi", 0x28),
    (ondisk.ext4_inode, "i_block", 0x28), (ondisk.ext4_inode, "i_generation", 0x64),
    (ondisk.ext4_inode, "l_i_checksum_lo", 0x7C), (ondisk.ext4_inode, "i_checksum_hi", 0x82),
    (ondisk.ext4_inode, "i_crtime", 0x90),
    (jbd2.journal_superblock, "s_checksum_type", 0x50), (jbd2.journal_superblock, "s_checksum", 0xFC),
])
def test_field_offsets(struct_, field: str, offset: int) -> None:
    assert struct_.offset_of(field) == offset


def test_inode_fast_structs_cover_the_inode() -> None:
    assert ondisk.INODE_BASE.size == 128
    assert ondisk.INODE_BASE.size + ondisk.INODE_EXTRA.size == ondisk.ext4_inode.size
