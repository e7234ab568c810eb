"""The jbd2 on-disk format (Documentation/filesystems/ext4/journal.rst). Big-endian."""

from __future__ import annotations

from ....lib.cstruct import CStruct

JBD2_MAGIC_NUMBER = 0xC03B3998
JBD2_DESCRIPTOR_BLOCK = 1
JBD2_COMMIT_BLOCK = 2
JBD2_SUPERBLOCK_V1 = 3
JBD2_SUPERBLOCK_V2 = 4
JBD2_REVOKE_BLOCK = 5
JBD2_FC_BLOCK = 6

JBD2_FEATURE_COMPAT_CHECKSUM = 0x1
JBD2_FEATURE_INCOMPAT_REVOKE = 0x1
JBD2_FEATURE_INCOMPAT_64BIT = 0x2
JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT = 0x4
JBD2_FEATURE_INCOMPAT_CSUM_V2 = 0x8
JBD2_FEATURE_INCOMPAT_CSUM_V3 = 0x10
JBD2_FEATURE_INCOMPAT_FAST_COMMIT = 0x20
JBD2_KNOWN_INCOMPAT = 0x3F

JBD2_CRC32C_CHKSUM = 4

# tag flags
JBD2_FLAG_ESCAPE = 1
JBD2_FLAG_SAME_UUID = 2
JBD2_FLAG_DELETED = 4
JBD2_FLAG_LAST_TAG = 8

journal_header = CStruct("journal_header_t", ">", [
    ("h_magic", "I"), ("h_blocktype", "I"), ("h_sequence", "I"),
], size=12)

journal_superblock = CStruct("journal_superblock_t", ">", [
    ("h_magic", "I"), ("h_blocktype", "I"), ("h_sequence", "I"),
    ("s_blocksize", "I"), ("s_maxlen", "I"), ("s_first", "I"),
    ("s_sequence", "I"), ("s_start", "I"), ("s_errno", "i"),
    ("s_feature_compat", "I"), ("s_feature_incompat", "I"), ("s_feature_ro_compat", "I"),
    ("s_uuid", "16s"), ("s_nr_users", "I"), ("s_dynsuper", "I"), ("s_max_transaction", "I"),
    ("s_max_trans_data", "I"), ("s_checksum_type", "B"), ("s_padding2", "3s"),
    ("s_num_fc_blks", "I"), ("s_head", "I"), ("s_padding", "160s"), ("s_checksum", "I"),
    ("s_users", "768s"),
], size=1024)
JSB_CHECKSUM_OFFSET = journal_superblock.offset_of("s_checksum")

commit_header = CStruct("commit_header", ">", [
    ("h_magic", "I"), ("h_blocktype", "I"), ("h_sequence", "I"),
    ("h_chksum_type", "B"), ("h_chksum_size", "B"), ("h_padding", "2s"),
    ("h_chksum", "32s"), ("h_commit_sec", "Q"), ("h_commit_nsec", "I"),
], size=60)
COMMIT_CHKSUM_OFFSET = commit_header.offset_of("h_chksum")

journal_block_tag3 = CStruct("journal_block_tag3_t", ">", [
    ("t_blocknr", "I"), ("t_flags", "I"), ("t_blocknr_high", "I"), ("t_checksum", "I"),
], size=16)
journal_block_tag = CStruct("journal_block_tag_t", ">", [
    ("t_blocknr", "I"), ("t_checksum", "H"), ("t_flags", "H"), ("t_blocknr_high", "I"),
], size=12)
jbd2_journal_block_tail = CStruct("jbd2_journal_block_tail", ">", [("t_checksum", "I")], size=4)
jbd2_journal_revoke_header = CStruct("jbd2_journal_revoke_header_t", ">", [
    ("h_magic", "I"), ("h_blocktype", "I"), ("h_sequence", "I"), ("r_count", "I"),
], size=16)

ALL_STRUCTS = (journal_header, journal_superblock, commit_header, journal_block_tag3,
               journal_block_tag, jbd2_journal_block_tail, jbd2_journal_revoke_header)
