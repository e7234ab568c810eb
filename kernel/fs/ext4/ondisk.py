"""The ext2/ext3/ext4 on-disk format (Documentation/filesystems/ext4/), nothing else.

Field names are Linux's (``fs/ext4/ext4.h``, ``ext4_extents.h``, ``xattr.h``,
``acl.h``). Everything is little-endian.
"""

from __future__ import annotations

import struct

from ...lib.cstruct import CStruct

EXT4_SUPER_MAGIC = 0xEF53
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
EXT4_MIN_BLOCK_LOG_SIZE = 10
EXT4_MAX_BLOCK_LOG_SIZE = 16  # 64 KiB
EXT4_GOOD_OLD_REV = 0
EXT4_DYNAMIC_REV = 1
EXT4_GOOD_OLD_INODE_SIZE = 128
EXT4_GOOD_OLD_FIRST_INO = 11
EXT4_MIN_DESC_SIZE = 32
EXT4_MIN_DESC_SIZE_64BIT = 64
EXT4_MAX_DESC_SIZE = 1024
EXT4_CRC32C_CHKSUM = 1
EXT4_OS_LINUX = 0

# special inodes
EXT4_BAD_INO = 1
EXT4_ROOT_INO = 2
EXT4_USR_QUOTA_INO = 3
EXT4_GRP_QUOTA_INO = 4
EXT4_BOOT_LOADER_INO = 5
EXT4_UNDEL_DIR_INO = 6
EXT4_RESIZE_INO = 7
EXT4_JOURNAL_INO = 8

# s_state
EXT4_VALID_FS = 0x0001
EXT4_ERROR_FS = 0x0002
EXT4_ORPHAN_FS = 0x0004

# s_flags
EXT2_FLAGS_SIGNED_HASH = 0x0001
EXT2_FLAGS_UNSIGNED_HASH = 0x0002
EXT2_FLAGS_TEST_FILESYS = 0x0004

# -- features -------------------------------------------------------------------------
COMPAT_DIR_PREALLOC = 0x0001
COMPAT_IMAGIC_INODES = 0x0002
COMPAT_HAS_JOURNAL = 0x0004
COMPAT_EXT_ATTR = 0x0008
COMPAT_RESIZE_INODE = 0x0010
COMPAT_DIR_INDEX = 0x0020
COMPAT_SPARSE_SUPER2 = 0x0200
COMPAT_FAST_COMMIT = 0x0400
COMPAT_STABLE_INODES = 0x0800
COMPAT_ORPHAN_FILE = 0x1000

RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_LARGE_FILE = 0x0002
RO_COMPAT_BTREE_DIR = 0x0004
RO_COMPAT_HUGE_FILE = 0x0008
RO_COMPAT_GDT_CSUM = 0x0010
RO_COMPAT_DIR_NLINK = 0x0020
RO_COMPAT_EXTRA_ISIZE = 0x0040
RO_COMPAT_HAS_SNAPSHOT = 0x0080
RO_COMPAT_QUOTA = 0x0100
RO_COMPAT_BIGALLOC = 0x0200
RO_COMPAT_METADATA_CSUM = 0x0400
RO_COMPAT_REPLICA = 0x0800
RO_COMPAT_READONLY = 0x1000
RO_COMPAT_PROJECT = 0x2000
RO_COMPAT_SHARED_BLOCKS = 0x4000
RO_COMPAT_VERITY = 0x8000
RO_COMPAT_ORPHAN_PRESENT = 0x10000

INCOMPAT_COMPRESSION = 0x0001
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_RECOVER = 0x0004
INCOMPAT_JOURNAL_DEV = 0x0008
INCOMPAT_META_BG = 0x0010
INCOMPAT_EXTENTS = 0x0040
INCOMPAT_64BIT = 0x0080
INCOMPAT_MMP = 0x0100
INCOMPAT_FLEX_BG = 0x0200
INCOMPAT_EA_INODE = 0x0400
INCOMPAT_DIRDATA = 0x1000
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000
INCOMPAT_CASEFOLD = 0x20000

INCOMPAT_NAMES = {
    INCOMPAT_COMPRESSION: "compression", INCOMPAT_FILETYPE: "filetype",
    INCOMPAT_RECOVER: "needs_recovery", INCOMPAT_JOURNAL_DEV: "journal_dev",
    INCOMPAT_META_BG: "meta_bg", INCOMPAT_EXTENTS: "extent", INCOMPAT_64BIT: "64bit",
    INCOMPAT_MMP: "mmp", INCOMPAT_FLEX_BG: "flex_bg", INCOMPAT_EA_INODE: "ea_inode",
    INCOMPAT_DIRDATA: "dirdata", INCOMPAT_CSUM_SEED: "metadata_csum_seed",
    INCOMPAT_LARGEDIR: "large_dir", INCOMPAT_INLINE_DATA: "inline_data",
    INCOMPAT_ENCRYPT: "encrypt", INCOMPAT_CASEFOLD: "casefold",
}
RO_COMPAT_NAMES = {
    RO_COMPAT_SPARSE_SUPER: "sparse_super", RO_COMPAT_LARGE_FILE: "large_file",
    RO_COMPAT_BTREE_DIR: "btree_dir", RO_COMPAT_HUGE_FILE: "huge_file",
    RO_COMPAT_GDT_CSUM: "uninit_bg", RO_COMPAT_DIR_NLINK: "dir_nlink",
    RO_COMPAT_EXTRA_ISIZE: "extra_isize", RO_COMPAT_HAS_SNAPSHOT: "snapshot",
    RO_COMPAT_QUOTA: "quota", RO_COMPAT_BIGALLOC: "bigalloc",
    RO_COMPAT_METADATA_CSUM: "metadata_csum", RO_COMPAT_REPLICA: "replica",
    RO_COMPAT_READONLY: "read-only", RO_COMPAT_PROJECT: "project",
    RO_COMPAT_SHARED_BLOCKS: "shared_blocks", RO_COMPAT_VERITY: "verity",
    RO_COMPAT_ORPHAN_PRESENT: "orphan_present",
}

# -- superblock -------------------------------------------------------------------------
ext4_super_block = CStruct("ext4_super_block", "<", [
    ("s_inodes_count", "I"), ("s_blocks_count_lo", "I"), ("s_r_blocks_count_lo", "I"),
    ("s_free_blocks_count_lo", "I"), ("s_free_inodes_count", "I"), ("s_first_data_block", "I"),
    ("s_log_block_size", "I"), ("s_log_cluster_size", "I"), ("s_blocks_per_group", "I"),
    ("s_clusters_per_group", "I"), ("s_inodes_per_group", "I"), ("s_mtime", "I"),
    ("s_wtime", "I"), ("s_mnt_count", "H"), ("s_max_mnt_count", "h"), ("s_magic", "H"),
    ("s_state", "H"), ("s_errors", "H"), ("s_minor_rev_level", "H"), ("s_lastcheck", "I"),
    ("s_checkinterval", "I"), ("s_creator_os", "I"), ("s_rev_level", "I"),
    ("s_def_resuid", "H"), ("s_def_resgid", "H"),
    # EXT4_DYNAMIC_REV
    ("s_first_ino", "I"), ("s_inode_size", "H"), ("s_block_group_nr", "H"),
    ("s_feature_compat", "I"), ("s_feature_incompat", "I"), ("s_feature_ro_compat", "I"),
    ("s_uuid", "16s"), ("s_volume_name", "16s"), ("s_last_mounted", "64s"),
    ("s_algorithm_usage_bitmap", "I"),
    ("s_prealloc_blocks", "B"), ("s_prealloc_dir_blocks", "B"), ("s_reserved_gdt_blocks", "H"),
    ("s_journal_uuid", "16s"), ("s_journal_inum", "I"), ("s_journal_dev", "I"),
    ("s_last_orphan", "I"), ("s_hash_seed", "16s"), ("s_def_hash_version", "B"),
    ("s_jnl_backup_type", "B"), ("s_desc_size", "H"), ("s_default_mount_opts", "I"),
    ("s_first_meta_bg", "I"), ("s_mkfs_time", "I"), ("s_jnl_blocks", "68s"),
    # 64bit
    ("s_blocks_count_hi", "I"), ("s_r_blocks_count_hi", "I"), ("s_free_blocks_count_hi", "I"),
    ("s_min_extra_isize", "H"), ("s_want_extra_isize", "H"), ("s_flags", "I"),
    ("s_raid_stride", "H"), ("s_mmp_update_interval", "H"), ("s_mmp_block", "Q"),
    ("s_raid_stripe_width", "I"), ("s_log_groups_per_flex", "B"), ("s_checksum_type", "B"),
    ("s_encryption_level", "B"), ("s_reserved_pad", "B"), ("s_kbytes_written", "Q"),
    ("s_snapshot_inum", "I"), ("s_snapshot_id", "I"), ("s_snapshot_r_blocks_count", "Q"),
    ("s_snapshot_list", "I"), ("s_error_count", "I"), ("s_first_error_time", "I"),
    ("s_first_error_ino", "I"), ("s_first_error_block", "Q"), ("s_first_error_func", "32s"),
    ("s_first_error_line", "I"), ("s_last_error_time", "I"), ("s_last_error_ino", "I"),
    ("s_last_error_line", "I"), ("s_last_error_block", "Q"), ("s_last_error_func", "32s"),
    ("s_mount_opts", "64s"), ("s_usr_quota_inum", "I"), ("s_grp_quota_inum", "I"),
    ("s_overhead_clusters", "I"), ("s_backup_bgs", "8s"), ("s_encrypt_algos", "4s"),
    ("s_encrypt_pw_salt", "16s"), ("s_lpf_ino", "I"), ("s_prj_quota_inum", "I"),
    ("s_checksum_seed", "I"), ("s_wtime_hi", "B"), ("s_mtime_hi", "B"), ("s_mkfs_time_hi", "B"),
    ("s_lastcheck_hi", "B"), ("s_first_error_time_hi", "B"), ("s_last_error_time_hi", "B"),
    ("s_first_error_errcode", "B"), ("s_last_error_errcode", "B"), ("s_encoding", "H"),
    ("s_encoding_flags", "H"), ("s_orphan_file_inum", "I"), ("s_reserved", "376s"),
    ("s_checksum", "I"),
], size=1024)
S_CHECKSUM_OFFSET = ext4_super_block.offset_of("s_checksum")  # 0x3FC

# -- block group descriptor ----------------------------------------------------------------
ext4_group_desc = CStruct("ext4_group_desc", "<", [
    ("bg_block_bitmap_lo", "I"), ("bg_inode_bitmap_lo", "I"), ("bg_inode_table_lo", "I"),
    ("bg_free_blocks_count_lo", "H"), ("bg_free_inodes_count_lo", "H"),
    ("bg_used_dirs_count_lo", "H"), ("bg_flags", "H"), ("bg_exclude_bitmap_lo", "I"),
    ("bg_block_bitmap_csum_lo", "H"), ("bg_inode_bitmap_csum_lo", "H"),
    ("bg_itable_unused_lo", "H"), ("bg_checksum", "H"),
    # 64bit (s_desc_size >= 64)
    ("bg_block_bitmap_hi", "I"), ("bg_inode_bitmap_hi", "I"), ("bg_inode_table_hi", "I"),
    ("bg_free_blocks_count_hi", "H"), ("bg_free_inodes_count_hi", "H"),
    ("bg_used_dirs_count_hi", "H"), ("bg_itable_unused_hi", "H"),
    ("bg_exclude_bitmap_hi", "I"), ("bg_block_bitmap_csum_hi", "H"),
    ("bg_inode_bitmap_csum_hi", "H"), ("bg_reserved", "I"),
], size=64)
ext4_group_desc32 = CStruct("ext4_group_desc32", "<", [
    (n, f) for n, f in (
        ("bg_block_bitmap_lo", "I"), ("bg_inode_bitmap_lo", "I"), ("bg_inode_table_lo", "I"),
        ("bg_free_blocks_count_lo", "H"), ("bg_free_inodes_count_lo", "H"),
        ("bg_used_dirs_count_lo", "H"), ("bg_flags", "H"), ("bg_exclude_bitmap_lo", "I"),
        ("bg_block_bitmap_csum_lo", "H"), ("bg_inode_bitmap_csum_lo", "H"),
        ("bg_itable_unused_lo", "H"), ("bg_checksum", "H"))
], size=32)
BG_CHECKSUM_OFFSET = 0x1E
BG_BLOCK_BITMAP_CSUM_HI_END = 0x3A
BG_INODE_BITMAP_CSUM_HI_END = 0x3C

_DESC32 = struct.Struct("<IIIHHHHIHHHH")
_DESC64 = struct.Struct("<IIIHHHHIHHHHIIIHHHHIHHI")


def unpack_group_desc(data: bytes | bytearray | memoryview, off: int,
                      desc_size: int) -> tuple[int, int, int, int, int, int, int, int, int, int, int]:
    """The group descriptor at ``off``, its halves joined: (block bitmap, inode bitmap,
    inode table, free blocks, free inodes, used directories, flags, itable_unused, block
    bitmap checksum, inode bitmap checksum, bg_checksum). One unpack per descriptor (a
    1 TiB filesystem has 8,192 of them, all read at mount)."""
    if desc_size >= 64:
        v = _DESC64.unpack_from(data, off)
        return (v[0] | v[12] << 32, v[1] | v[13] << 32, v[2] | v[14] << 32, v[3] | v[15] << 16,
                v[4] | v[16] << 16, v[5] | v[17] << 16, v[6], v[10] | v[18] << 16,
                v[8] | (v[20] << 16 if desc_size >= BG_BLOCK_BITMAP_CSUM_HI_END else 0),
                v[9] | (v[21] << 16 if desc_size >= BG_INODE_BITMAP_CSUM_HI_END else 0), v[11])
    v = _DESC32.unpack_from(data, off)
    return v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[10], v[8], v[9], v[11]


EXT4_BG_INODE_UNINIT = 0x0001
EXT4_BG_BLOCK_UNINIT = 0x0002
EXT4_BG_INODE_ZEROED = 0x0004

# -- inode ----------------------------------------------------------------------------------
EXT4_N_BLOCKS = 15
EXT4_NDIR_BLOCKS = 12
EXT4_IND_BLOCK = 12
EXT4_DIND_BLOCK = 13
EXT4_TIND_BLOCK = 14

ext4_inode = CStruct("ext4_inode", "<", [
    ("i_mode", "H"), ("i_uid", "H"), ("i_size_lo", "I"), ("i_atime", "i"), ("i_ctime", "i"),
    ("i_mtime", "i"), ("i_dtime", "I"), ("i_gid", "H"), ("i_links_count", "H"),
    ("i_blocks_lo", "I"), ("i_flags", "I"), ("l_i_version", "I"), ("i_block", "60s"),
    ("i_generation", "I"), ("i_file_acl_lo", "I"), ("i_size_high", "I"), ("i_obso_faddr", "I"),
    ("l_i_blocks_high", "H"), ("l_i_file_acl_high", "H"), ("l_i_uid_high", "H"),
    ("l_i_gid_high", "H"), ("l_i_checksum_lo", "H"), ("l_i_reserved", "H"),
    # large inodes (s_inode_size > 128), valid up to 128 + i_extra_isize
    ("i_extra_isize", "H"), ("i_checksum_hi", "H"), ("i_ctime_extra", "I"),
    ("i_mtime_extra", "I"), ("i_atime_extra", "I"), ("i_crtime", "i"), ("i_crtime_extra", "I"),
    ("i_version_hi", "I"), ("i_projid", "I"),
], size=160)

# The first 128 bytes (every inode) and the extra fields, as two plain structs
# for speed: the hot path unpacks them directly.
INODE_BASE = struct.Struct("<HHIiiiIHHIII60sIIIIHHHHHH")
INODE_EXTRA = struct.Struct("<HHIIIiIII")  # i_extra_isize .. i_projid
I_CHECKSUM_LO_OFFSET = 0x7C
I_CHECKSUM_HI_OFFSET = 0x82
I_EXTRA_ISIZE_OFFSET = 0x80
# offsets of the extra fields, for EXT4_FITS_IN_INODE
I_CHECKSUM_HI_END = 0x84 - EXT4_GOOD_OLD_INODE_SIZE  # i_extra_isize >= 4
I_CTIME_EXTRA_END = 0x88 - EXT4_GOOD_OLD_INODE_SIZE
I_MTIME_EXTRA_END = 0x8C - EXT4_GOOD_OLD_INODE_SIZE
I_ATIME_EXTRA_END = 0x90 - EXT4_GOOD_OLD_INODE_SIZE
I_CRTIME_END = 0x94 - EXT4_GOOD_OLD_INODE_SIZE
I_CRTIME_EXTRA_END = 0x98 - EXT4_GOOD_OLD_INODE_SIZE

EXT4_EPOCH_MASK = 3
EXT4_NSEC_SHIFT = 2

# i_flags
EXT4_SECRM_FL = 0x00000001
EXT4_COMPR_FL = 0x00000004
EXT4_IMMUTABLE_FL = 0x00000010
EXT4_APPEND_FL = 0x00000020
EXT4_ENCRYPT_FL = 0x00000800
EXT4_INDEX_FL = 0x00001000
EXT4_JOURNAL_DATA_FL = 0x00004000
EXT4_TOPDIR_FL = 0x00020000  # top of a directory hierarchy: Orlov spreads its subdirectories
EXT4_HUGE_FILE_FL = 0x00040000
EXT4_EXTENTS_FL = 0x00080000
EXT4_VERITY_FL = 0x00100000
EXT4_EA_INODE_FL = 0x00200000
EXT4_INLINE_DATA_FL = 0x10000000
EXT4_CASEFOLD_FL = 0x40000000

# -- extents ---------------------------------------------------------------------------------
EXT4_EXT_MAGIC = 0xF30A
EXT4_EXT_MAX_DEPTH = 5
EXT_INIT_MAX_LEN = 1 << 15
ext4_extent_header = CStruct("ext4_extent_header", "<", [
    ("eh_magic", "H"), ("eh_entries", "H"), ("eh_max", "H"), ("eh_depth", "H"),
    ("eh_generation", "I"),
], size=12)
ext4_extent = CStruct("ext4_extent", "<", [
    ("ee_block", "I"), ("ee_len", "H"), ("ee_start_hi", "H"), ("ee_start_lo", "I"),
], size=12)
ext4_extent_idx = CStruct("ext4_extent_idx", "<", [
    ("ei_block", "I"), ("ei_leaf_lo", "I"), ("ei_leaf_hi", "H"), ("ei_unused", "H"),
], size=12)
ext4_extent_tail = CStruct("ext4_extent_tail", "<", [("et_checksum", "I")], size=4)

# -- directories -----------------------------------------------------------------------------
EXT4_NAME_LEN = 255
ext4_dir_entry_2 = CStruct("ext4_dir_entry_2", "<", [
    ("inode", "I"), ("rec_len", "H"), ("name_len", "B"), ("file_type", "B"),
], size=8)
ext4_dir_entry = CStruct("ext4_dir_entry", "<", [
    ("inode", "I"), ("rec_len", "H"), ("name_len", "H"),
], size=8)
ext4_dir_entry_tail = CStruct("ext4_dir_entry_tail", "<", [
    ("det_reserved_zero1", "I"), ("det_rec_len", "H"), ("det_reserved_zero2", "B"),
    ("det_reserved_ft", "B"), ("det_checksum", "I"),
], size=12)
EXT4_DIR_ENTRY_TAIL_FT = 0xDE
EXT4_MAX_REC_LEN = (1 << 16) - 1

EXT4_FT_UNKNOWN = 0
EXT4_FT_REG_FILE = 1
EXT4_FT_DIR = 2
EXT4_FT_CHRDEV = 3
EXT4_FT_BLKDEV = 4
EXT4_FT_FIFO = 5
EXT4_FT_SOCK = 6
EXT4_FT_SYMLINK = 7
EXT4_FT_MAX = 8

# htree (dx) directories
dx_root_info = CStruct("dx_root_info", "<", [
    ("reserved_zero", "I"), ("hash_version", "B"), ("info_length", "B"),
    ("indirect_levels", "B"), ("unused_flags", "B"),
], size=8)
dx_countlimit = CStruct("dx_countlimit", "<", [("limit", "H"), ("count", "H")], size=4)
dx_entry = CStruct("dx_entry", "<", [("hash", "I"), ("block", "I")], size=8)
dx_tail = CStruct("dx_tail", "<", [("dt_reserved", "I"), ("dt_checksum", "I")], size=8)
DX_ROOT_INFO_OFFSET = 24  # after the "." and ".." entries
DX_ROOT_ENTRIES_OFFSET = 32
DX_NODE_ENTRIES_OFFSET = 8  # after the fake empty dirent
EXT4_HTREE_LEVEL_COMPAT = 2
EXT4_HTREE_LEVEL = 3

DX_HASH_LEGACY = 0
DX_HASH_HALF_MD4 = 1
DX_HASH_TEA = 2
DX_HASH_LEGACY_UNSIGNED = 3
DX_HASH_HALF_MD4_UNSIGNED = 4
DX_HASH_TEA_UNSIGNED = 5
DX_HASH_SIPHASH = 6

# -- inline data ---------------------------------------------------------------------------------
EXT4_MIN_INLINE_DATA_SIZE = EXT4_N_BLOCKS * 4  # 60 bytes in i_block
EXT4_INLINE_DOTDOT_SIZE = 4

# -- extended attributes ----------------------------------------------------------------------------
EXT4_XATTR_MAGIC = 0xEA020000
ext4_xattr_header = CStruct("ext4_xattr_header", "<", [
    ("h_magic", "I"), ("h_refcount", "I"), ("h_blocks", "I"), ("h_hash", "I"),
    ("h_checksum", "I"), ("h_reserved", "12s"),
], size=32)
ext4_xattr_ibody_header = CStruct("ext4_xattr_ibody_header", "<", [("h_magic", "I")], size=4)
ext4_xattr_entry = CStruct("ext4_xattr_entry", "<", [
    ("e_name_len", "B"), ("e_name_index", "B"), ("e_value_offs", "H"), ("e_value_inum", "I"),
    ("e_value_size", "I"), ("e_hash", "I"),
], size=16)
XATTR_H_CHECKSUM_OFFSET = 0x10
EXT4_XATTR_PAD = 4

EXT4_XATTR_INDEX_USER = 1
EXT4_XATTR_INDEX_POSIX_ACL_ACCESS = 2
EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT = 3
EXT4_XATTR_INDEX_TRUSTED = 4
EXT4_XATTR_INDEX_LUSTRE = 5
EXT4_XATTR_INDEX_SECURITY = 6
EXT4_XATTR_INDEX_SYSTEM = 7
EXT4_XATTR_INDEX_RICHACL = 8
EXT4_XATTR_INDEX_ENCRYPTION = 9
EXT4_XATTR_INDEX_HURD = 10

# -- ACLs (compact on-disk form) ---------------------------------------------------------------------
EXT4_ACL_VERSION = 0x0001
ext4_acl_header = CStruct("ext4_acl_header", "<", [("a_version", "I")], size=4)
ext4_acl_entry = CStruct("ext4_acl_entry", "<", [
    ("e_tag", "H"), ("e_perm", "H"), ("e_id", "I"),
], size=8)
ext4_acl_entry_short = CStruct("ext4_acl_entry_short", "<", [
    ("e_tag", "H"), ("e_perm", "H"),
], size=4)

# -- orphan file ------------------------------------------------------------------------------------
EXT4_ORPHAN_BLOCK_MAGIC = 0x0B10CA04
ext4_orphan_block_tail = CStruct("ext4_orphan_block_tail", "<", [
    ("ob_magic", "I"), ("ob_checksum", "I"),
], size=8)

# -- multiple mount protection -----------------------------------------------------------------------
EXT4_MMP_MAGIC = 0x004D4D50

ALL_STRUCTS = (
    ext4_super_block, ext4_group_desc, ext4_group_desc32, ext4_inode, ext4_extent_header,
    ext4_extent, ext4_extent_idx, ext4_extent_tail, ext4_dir_entry_2, ext4_dir_entry,
    ext4_dir_entry_tail, dx_root_info, dx_countlimit, dx_entry, dx_tail, ext4_xattr_header,
    ext4_xattr_ibody_header, ext4_xattr_entry, ext4_acl_header, ext4_acl_entry,
    ext4_acl_entry_short, ext4_orphan_block_tail,
)
