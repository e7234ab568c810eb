"""The btrfs on-disk format (Documentation/filesystems/btrfs and the btrfs wiki's
"On-disk Format"), nothing else. Everything is little-endian.
"""

from __future__ import annotations

import struct

BTRFS_MAGIC = b"_BHRfS_M"
SUPER_OFFSETS = (0x10000, 0x4000000, 0x4000000000)  # 64 KiB, 64 MiB, 256 GiB
SUPER_INFO_SIZE = 4096
CSUM_SIZE = 32

# checksum types
CSUM_CRC32C, CSUM_XXHASH, CSUM_SHA256, CSUM_BLAKE2 = 0, 1, 2, 3
CSUM_LEN = {CSUM_CRC32C: 4, CSUM_XXHASH: 8, CSUM_SHA256: 32, CSUM_BLAKE2: 32}
CSUM_NAMES = {CSUM_CRC32C: "crc32c", CSUM_XXHASH: "xxhash64", CSUM_SHA256: "sha256",
              CSUM_BLAKE2: "blake2b"}

# tree ids (objectids of ROOT_ITEMs)
ROOT_TREE_OBJECTID = 1
EXTENT_TREE_OBJECTID = 2
CHUNK_TREE_OBJECTID = 3
DEV_TREE_OBJECTID = 4
FS_TREE_OBJECTID = 5
ROOT_TREE_DIR_OBJECTID = 6
CSUM_TREE_OBJECTID = 7
FIRST_FREE_OBJECTID = 256
LAST_FREE_OBJECTID = (1 << 64) - 256
FIRST_CHUNK_TREE_OBJECTID = 256
EXTENT_CSUM_OBJECTID = (1 << 64) - 10
EMPTY_SUBVOL_DIR_OBJECTID = 2

# item types
INODE_ITEM_KEY = 1
INODE_REF_KEY = 12
INODE_EXTREF_KEY = 13
XATTR_ITEM_KEY = 24
DIR_ITEM_KEY = 84
DIR_INDEX_KEY = 96
EXTENT_DATA_KEY = 108
EXTENT_CSUM_KEY = 128
ROOT_ITEM_KEY = 132
ROOT_BACKREF_KEY = 144
ROOT_REF_KEY = 156
CHUNK_ITEM_KEY = 228

# directory entry types (BTRFS_FT_*)
FT_UNKNOWN, FT_REG_FILE, FT_DIR, FT_CHRDEV, FT_BLKDEV, FT_FIFO, FT_SOCK, FT_SYMLINK, FT_XATTR = \
    range(9)

# file extents
FILE_EXTENT_INLINE, FILE_EXTENT_REG, FILE_EXTENT_PREALLOC = 0, 1, 2
COMPRESS_NONE, COMPRESS_ZLIB, COMPRESS_LZO, COMPRESS_ZSTD = 0, 1, 2, 3

# inode flags
INODE_NODATASUM = 1 << 0
INODE_NODATACOW = 1 << 1

# chunk / block group profile bits
BLOCK_GROUP_DATA = 1 << 0
BLOCK_GROUP_SYSTEM = 1 << 1
BLOCK_GROUP_METADATA = 1 << 2
BLOCK_GROUP_RAID0 = 1 << 3
BLOCK_GROUP_RAID1 = 1 << 4
BLOCK_GROUP_DUP = 1 << 5
BLOCK_GROUP_RAID10 = 1 << 6
BLOCK_GROUP_RAID5 = 1 << 7
BLOCK_GROUP_RAID6 = 1 << 8
BLOCK_GROUP_RAID1C3 = 1 << 9
BLOCK_GROUP_RAID1C4 = 1 << 10
MIRRORED = BLOCK_GROUP_DUP | BLOCK_GROUP_RAID1 | BLOCK_GROUP_RAID1C3 | BLOCK_GROUP_RAID1C4
STRIPED = BLOCK_GROUP_RAID0 | BLOCK_GROUP_RAID10 | BLOCK_GROUP_RAID5 | BLOCK_GROUP_RAID6

# incompat features
INCOMPAT_MIXED_BACKREF = 1 << 0
INCOMPAT_DEFAULT_SUBVOL = 1 << 1
INCOMPAT_MIXED_GROUPS = 1 << 2
INCOMPAT_COMPRESS_LZO = 1 << 3
INCOMPAT_COMPRESS_ZSTD = 1 << 4
INCOMPAT_BIG_METADATA = 1 << 5
INCOMPAT_EXTENDED_IREF = 1 << 6
INCOMPAT_RAID56 = 1 << 7
INCOMPAT_SKINNY_METADATA = 1 << 8
INCOMPAT_NO_HOLES = 1 << 9
INCOMPAT_METADATA_UUID = 1 << 10
INCOMPAT_RAID1C34 = 1 << 11
INCOMPAT_ZONED = 1 << 12
INCOMPAT_EXTENT_TREE_V2 = 1 << 13
INCOMPAT_RAID_STRIPE_TREE = 1 << 14
INCOMPAT_SIMPLE_QUOTA = 1 << 16
SUPPORTED_INCOMPAT = (INCOMPAT_MIXED_BACKREF | INCOMPAT_DEFAULT_SUBVOL | INCOMPAT_MIXED_GROUPS
                      | INCOMPAT_COMPRESS_LZO | INCOMPAT_COMPRESS_ZSTD | INCOMPAT_BIG_METADATA
                      | INCOMPAT_EXTENDED_IREF | INCOMPAT_SKINNY_METADATA | INCOMPAT_NO_HOLES
                      | INCOMPAT_METADATA_UUID | INCOMPAT_RAID1C34 | INCOMPAT_SIMPLE_QUOTA
                      | INCOMPAT_RAID56)

# the superblock, as far as reading needs it
SUPER = struct.Struct("<32s16sQQ8sQQQQQQQQQIIIIIQQQQHBBB")
SUPER_FIELDS = ("csum", "fsid", "bytenr", "flags", "magic", "generation", "root", "chunk_root",
                "log_root", "log_root_transid", "total_bytes", "bytes_used", "root_dir_objectid",
                "num_devices", "sectorsize", "nodesize", "leafsize", "stripesize",
                "sys_chunk_array_size", "chunk_root_generation", "compat_flags",
                "compat_ro_flags", "incompat_flags", "csum_type", "root_level",
                "chunk_root_level", "log_root_level")
SUPER_METADATA_UUID_OFFSET = 0x23B
SUPER_SYS_CHUNK_ARRAY_OFFSET = 0x32B
SUPER_SYS_CHUNK_ARRAY_MAX = 2048

# tree blocks
HEADER = struct.Struct("<32s16sQQ16sQQIB")  # csum fsid bytenr flags chunk_uuid gen owner nritems level
HEADER_SIZE = HEADER.size  # 101
KEY = struct.Struct("<QBQ")  # objectid, type, offset
ITEM = struct.Struct("<QBQII")  # key, data offset (from the end of the header), size
KEY_PTR = struct.Struct("<QBQQQ")  # key, block pointer, generation
assert HEADER_SIZE == 101 and ITEM.size == 25 and KEY_PTR.size == 33

CHUNK = struct.Struct("<QQQQIIIHH")  # length owner stripe_len type io_align io_width sector num sub
STRIPE = struct.Struct("<QQ16s")  # devid offset dev_uuid
INODE_ITEM = struct.Struct("<QQQQQIIIIQQQ32sQIQIQIQI")
assert INODE_ITEM.size == 160
DIR_ITEM = struct.Struct("<QBQQHHB")  # location key, transid, data_len, name_len, type
INODE_REF = struct.Struct("<QH")  # index, name_len
INODE_EXTREF = struct.Struct("<QQH")  # parent, index, name_len
FILE_EXTENT = struct.Struct("<QQBBHB")  # generation ram_bytes compression encryption other type
FILE_EXTENT_DISK = struct.Struct("<QQQQ")  # disk_bytenr disk_num_bytes offset num_bytes
ROOT_ITEM_DIRID_OFFSET = 168
ROOT_ITEM_BYTENR_OFFSET = 176
ROOT_ITEM_LEVEL_OFFSET = 238
ROOT_REF = struct.Struct("<QQH")  # dirid, sequence, name_len
