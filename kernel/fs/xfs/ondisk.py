"""The XFS on-disk format (libxfs/xfs_format.h, xfs_da_format.h, xfs_log_format.h).

Everything on disk is big-endian except the CRC fields, which are stored
little-endian (``xfs_update_cksum``), and the log's item payloads, which are
in the byte order of the machine that wrote them. Sizes are asserted here
and again in the tests, as ``xfs_ondisk.h`` does.
"""

from __future__ import annotations

import struct

from ...lib.cstruct import CStruct

# -- superblock (xfs_dsb) -------------------------------------------------------------------
XFS_SB_MAGIC = 0x58465342  # "XFSB"
XFS_SUPER_MAGIC = 0x58465342  # statfs f_type

xfs_dsb = CStruct("xfs_dsb", ">", [
    ("sb_magicnum", "I"), ("sb_blocksize", "I"), ("sb_dblocks", "Q"), ("sb_rblocks", "Q"),
    ("sb_rextents", "Q"), ("sb_uuid", "16s"), ("sb_logstart", "Q"), ("sb_rootino", "Q"),
    ("sb_rbmino", "Q"), ("sb_rsumino", "Q"), ("sb_rextsize", "I"), ("sb_agblocks", "I"),
    ("sb_agcount", "I"), ("sb_rbmblocks", "I"), ("sb_logblocks", "I"), ("sb_versionnum", "H"),
    ("sb_sectsize", "H"), ("sb_inodesize", "H"), ("sb_inopblock", "H"), ("sb_fname", "12s"),
    ("sb_blocklog", "B"), ("sb_sectlog", "B"), ("sb_inodelog", "B"), ("sb_inopblog", "B"),
    ("sb_agblklog", "B"), ("sb_rextslog", "B"), ("sb_inprogress", "B"), ("sb_imax_pct", "B"),
    ("sb_icount", "Q"), ("sb_ifree", "Q"), ("sb_fdblocks", "Q"), ("sb_frextents", "Q"),
    ("sb_uquotino", "Q"), ("sb_gquotino", "Q"), ("sb_qflags", "H"), ("sb_flags", "B"),
    ("sb_shared_vn", "B"), ("sb_inoalignmt", "I"), ("sb_unit", "I"), ("sb_width", "I"),
    ("sb_dirblklog", "B"), ("sb_logsectlog", "B"), ("sb_logsectsize", "H"), ("sb_logsunit", "I"),
    ("sb_features2", "I"), ("sb_bad_features2", "I"), ("sb_features_compat", "I"),
    ("sb_features_ro_compat", "I"), ("sb_features_incompat", "I"),
    ("sb_features_log_incompat", "I"), ("sb_crc", "4s"), ("sb_spino_align", "I"),
    ("sb_pquotino", "Q"), ("sb_lsn", "Q"), ("sb_meta_uuid", "16s"),
], size=264)
XFS_SB_CRC_OFF = 224

XFS_SB_VERSION_1 = 1
XFS_SB_VERSION_4 = 4
XFS_SB_VERSION_5 = 5
XFS_SB_VERSION_NUMBITS = 0x000F
XFS_SB_VERSION_ATTRBIT = 0x0010
XFS_SB_VERSION_NLINKBIT = 0x0020
XFS_SB_VERSION_QUOTABIT = 0x0040
XFS_SB_VERSION_ALIGNBIT = 0x0080
XFS_SB_VERSION_DALIGNBIT = 0x0100
XFS_SB_VERSION_SHAREDBIT = 0x0200
XFS_SB_VERSION_LOGV2BIT = 0x0400
XFS_SB_VERSION_SECTORBIT = 0x0800
XFS_SB_VERSION_EXTFLGBIT = 0x1000
XFS_SB_VERSION_DIRV2BIT = 0x2000
XFS_SB_VERSION_BORGBIT = 0x4000  # ASCII-only case-insensitive names
XFS_SB_VERSION_MOREBITSBIT = 0x8000

XFS_SB_VERSION2_LAZYSBCOUNTBIT = 0x00000002
XFS_SB_VERSION2_ATTR2BIT = 0x00000008
XFS_SB_VERSION2_PARENTBIT = 0x00000010
XFS_SB_VERSION2_PROJID32BIT = 0x00000080
XFS_SB_VERSION2_CRCBIT = 0x00000100
XFS_SB_VERSION2_FTYPE = 0x00000200

XFS_SB_FEAT_RO_COMPAT_FINOBT = 1 << 0
XFS_SB_FEAT_RO_COMPAT_RMAPBT = 1 << 1
XFS_SB_FEAT_RO_COMPAT_REFLINK = 1 << 2
XFS_SB_FEAT_RO_COMPAT_INOBTCNT = 1 << 3

XFS_SB_FEAT_INCOMPAT_FTYPE = 1 << 0
XFS_SB_FEAT_INCOMPAT_SPINODES = 1 << 1
XFS_SB_FEAT_INCOMPAT_META_UUID = 1 << 2
XFS_SB_FEAT_INCOMPAT_BIGTIME = 1 << 3
XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR = 1 << 4
XFS_SB_FEAT_INCOMPAT_NREXT64 = 1 << 5
XFS_SB_FEAT_INCOMPAT_EXCHRANGE = 1 << 6
XFS_SB_FEAT_INCOMPAT_PARENT = 1 << 7
XFS_SB_FEAT_INCOMPAT_METADIR = 1 << 8

INCOMPAT_NAMES = {
    XFS_SB_FEAT_INCOMPAT_FTYPE: "ftype", XFS_SB_FEAT_INCOMPAT_SPINODES: "sparse",
    XFS_SB_FEAT_INCOMPAT_META_UUID: "meta_uuid", XFS_SB_FEAT_INCOMPAT_BIGTIME: "bigtime",
    XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR: "needsrepair", XFS_SB_FEAT_INCOMPAT_NREXT64: "nrext64",
    XFS_SB_FEAT_INCOMPAT_EXCHRANGE: "exchange", XFS_SB_FEAT_INCOMPAT_PARENT: "parent",
    XFS_SB_FEAT_INCOMPAT_METADIR: "metadir",
}

XFS_SB_FEAT_LOG_INCOMPAT_XATTRS = 1 << 0

NULLFSINO = 0xFFFFFFFFFFFFFFFF
NULLAGINO = 0xFFFFFFFF
NULLAGBLOCK = 0xFFFFFFFF
NULLFSBLOCK = 0xFFFFFFFFFFFFFFFF
BBSHIFT = 9
BBSIZE = 512

# -- allocation group headers -------------------------------------------------------------
XFS_AGF_MAGIC = 0x58414746  # "XAGF"
XFS_AGI_MAGIC = 0x58414749  # "XAGI"
XFS_AGFL_MAGIC = 0x5841464C  # "XAFL"

xfs_agf = CStruct("xfs_agf", ">", [
    ("agf_magicnum", "I"), ("agf_versionnum", "I"), ("agf_seqno", "I"), ("agf_length", "I"),
    ("agf_bno_root", "I"), ("agf_cnt_root", "I"), ("agf_rmap_root", "I"),
    ("agf_bno_level", "I"), ("agf_cnt_level", "I"), ("agf_rmap_level", "I"),
    ("agf_flfirst", "I"), ("agf_fllast", "I"), ("agf_flcount", "I"), ("agf_freeblks", "I"),
    ("agf_longest", "I"), ("agf_btreeblks", "I"), ("agf_uuid", "16s"),
    ("agf_rmap_blocks", "I"), ("agf_refcount_blocks", "I"), ("agf_refcount_root", "I"),
    ("agf_refcount_level", "I"), ("agf_spare64", "112s"), ("agf_lsn", "Q"), ("agf_crc", "4s"),
    ("agf_spare2", "I"),
], size=224)
XFS_AGF_CRC_OFF = 216

xfs_agi = CStruct("xfs_agi", ">", [
    ("agi_magicnum", "I"), ("agi_versionnum", "I"), ("agi_seqno", "I"), ("agi_length", "I"),
    ("agi_count", "I"), ("agi_root", "I"), ("agi_level", "I"), ("agi_freecount", "I"),
    ("agi_newino", "I"), ("agi_dirino", "I"), ("agi_unlinked", "256s"), ("agi_uuid", "16s"),
    ("agi_crc", "4s"), ("agi_pad32", "I"), ("agi_lsn", "Q"), ("agi_free_root", "I"),
    ("agi_free_level", "I"), ("agi_iblocks", "I"), ("agi_fblocks", "I"),
], size=344)
XFS_AGI_CRC_OFF = 312

xfs_agfl = CStruct("xfs_agfl", ">", [
    ("agfl_magicnum", "I"), ("agfl_seqno", "I"), ("agfl_uuid", "16s"), ("agfl_lsn", "Q"),
    ("agfl_crc", "4s"),
], size=36)
XFS_AGFL_CRC_OFF = 32

# -- generic btree block headers ------------------------------------------------------------
# short form (AG btrees: 32-bit sibling pointers) and long form (bmap btree)
xfs_btree_sblock = CStruct("xfs_btree_sblock", ">", [
    ("bb_magic", "I"), ("bb_level", "H"), ("bb_numrecs", "H"), ("bb_leftsib", "I"),
    ("bb_rightsib", "I"), ("bb_blkno", "Q"), ("bb_lsn", "Q"), ("bb_uuid", "16s"),
    ("bb_owner", "I"), ("bb_crc", "4s"),
], size=56)
xfs_btree_lblock = CStruct("xfs_btree_lblock", ">", [
    ("bb_magic", "I"), ("bb_level", "H"), ("bb_numrecs", "H"), ("bb_leftsib", "Q"),
    ("bb_rightsib", "Q"), ("bb_blkno", "Q"), ("bb_lsn", "Q"), ("bb_uuid", "16s"),
    ("bb_owner", "Q"), ("bb_crc", "4s"), ("bb_pad", "I"),
], size=72)
XFS_BTREE_SBLOCK_LEN = 16
XFS_BTREE_SBLOCK_CRC_LEN = 56
XFS_BTREE_LBLOCK_LEN = 24
XFS_BTREE_LBLOCK_CRC_LEN = 72
XFS_BTREE_SBLOCK_CRC_OFF = 52
XFS_BTREE_LBLOCK_CRC_OFF = 64

XFS_BMAP_MAGIC = 0x424D4150  # "BMAP"
XFS_BMAP_CRC_MAGIC = 0x424D4133  # "BMA3"
XFS_ABTB_MAGIC = 0x41425442
XFS_ABTB_CRC_MAGIC = 0x41423342
XFS_ABTC_MAGIC = 0x41425443
XFS_ABTC_CRC_MAGIC = 0x41423343
XFS_IBT_MAGIC = 0x49414254
XFS_IBT_CRC_MAGIC = 0x49414233
XFS_FIBT_MAGIC = 0x46494254
XFS_FIBT_CRC_MAGIC = 0x46494233
XFS_RMAP_CRC_MAGIC = 0x524D4233
XFS_REFC_CRC_MAGIC = 0x52334643
SBLOCK_CRC_MAGICS = frozenset((XFS_ABTB_CRC_MAGIC, XFS_ABTC_CRC_MAGIC, XFS_IBT_CRC_MAGIC,
                               XFS_FIBT_CRC_MAGIC, XFS_RMAP_CRC_MAGIC, XFS_REFC_CRC_MAGIC))

# bmap btree root in the inode fork (xfs_bmdr_block): level, numrecs, then keys and ptrs
xfs_bmdr_block = CStruct("xfs_bmdr_block", ">", [("bb_level", "H"), ("bb_numrecs", "H")], size=4)
XFS_BMBT_REC_SIZE = 16
XFS_BMBT_KEY_SIZE = 8
XFS_BMBT_PTR_SIZE = 8
xfs_bmbt_rec = struct.Struct(">QQ")
BMBT_STARTOFF_MASK = (1 << 54) - 1
BMBT_BLOCKCOUNT_MASK = (1 << 21) - 1
XFS_MAX_FILEOFF = (1 << 54) - 1

# -- inodes ------------------------------------------------------------------------------------
XFS_DINODE_MAGIC = 0x494E  # "IN"
xfs_dinode_fields = [
    ("di_magic", "H"), ("di_mode", "H"), ("di_version", "B"), ("di_format", "B"),
    ("di_onlink", "H"), ("di_uid", "I"), ("di_gid", "I"), ("di_nlink", "I"),
    ("di_projid_lo", "H"), ("di_projid_hi", "H"),
    ("di_big_nextents", "Q"),  # nrext64; otherwise di_v2_pad[6] + di_flushiter
    ("di_atime", "Q"), ("di_mtime", "Q"), ("di_ctime", "Q"),
    ("di_size", "Q"), ("di_nblocks", "Q"), ("di_extsize", "I"),
    ("di_nextents", "I"),  # nrext64: di_big_anextents
    ("di_anextents", "H"),  # nrext64: di_nrext64_pad
    ("di_forkoff", "B"), ("di_aformat", "b"), ("di_dmevmask", "I"), ("di_dmstate", "H"),
    ("di_flags", "H"), ("di_gen", "I"), ("di_next_unlinked", "I"),
    # version 3 only from here
    ("di_crc", "4s"), ("di_changecount", "Q"), ("di_lsn", "Q"), ("di_flags2", "Q"),
    ("di_cowextsize", "I"), ("di_pad2", "12s"), ("di_crtime", "Q"), ("di_ino", "Q"),
    ("di_uuid", "16s"),
]
xfs_dinode = CStruct("xfs_dinode", ">", xfs_dinode_fields, size=176)
XFS_DINODE_V2_CORE = 100  # xfs_dinode_size() for versions 1 and 2
XFS_DINODE_V3_CORE = 176
XFS_DINODE_CRC_OFF = 100
XFS_DINODE_NEXT_UNLINKED_OFF = 96
XFS_DINODE_LSN_OFF = 112
XFS_DINODE_FLUSHITER_OFF = 30

XFS_DINODE_FMT_DEV = 0
XFS_DINODE_FMT_LOCAL = 1
XFS_DINODE_FMT_EXTENTS = 2
XFS_DINODE_FMT_BTREE = 3
XFS_DINODE_FMT_UUID = 4

XFS_DIFLAG_REALTIME = 0x0001
XFS_DIFLAG_PREALLOC = 0x0002
XFS_DIFLAG2_DAX = 0x1
XFS_DIFLAG2_REFLINK = 0x2
XFS_DIFLAG2_COWEXTSIZE = 0x4
XFS_DIFLAG2_BIGTIME = 0x8
XFS_DIFLAG2_NREXT64 = 0x10

# bigtime: nanoseconds since the minimum of the old 32-bit second counter
XFS_BIGTIME_EPOCH_OFFSET = 1 << 31
XFS_DEV_BITSMINOR = 18
XFS_DEV_MAXMIN = (1 << XFS_DEV_BITSMINOR) - 1

# -- directories (version 2 and 3) -------------------------------------------------------------
XFS_DIR2_BLOCK_MAGIC = 0x58443242  # "XD2B"
XFS_DIR2_DATA_MAGIC = 0x58443244  # "XD2D"
XFS_DIR2_FREE_MAGIC = 0x58443246  # "XD2F"
XFS_DIR3_BLOCK_MAGIC = 0x58444233  # "XDB3"
XFS_DIR3_DATA_MAGIC = 0x58444433  # "XDD3"
XFS_DIR3_FREE_MAGIC = 0x58444633  # "XDF3"

# da_blkinfo magics (16-bit, after forw/back)
XFS_DA_NODE_MAGIC = 0xFEBE
XFS_DA3_NODE_MAGIC = 0x3EBE
XFS_DIR2_LEAF1_MAGIC = 0xD2F1
XFS_DIR2_LEAFN_MAGIC = 0xD2FF
XFS_DIR3_LEAF1_MAGIC = 0x3DF1
XFS_DIR3_LEAFN_MAGIC = 0x3DFF
XFS_ATTR_LEAF_MAGIC = 0xFBEE
XFS_ATTR3_LEAF_MAGIC = 0x3BEE
DA3_MAGICS = frozenset((XFS_DA3_NODE_MAGIC, XFS_DIR3_LEAF1_MAGIC, XFS_DIR3_LEAFN_MAGIC,
                        XFS_ATTR3_LEAF_MAGIC))

xfs_da_blkinfo = CStruct("xfs_da_blkinfo", ">", [
    ("forw", "I"), ("back", "I"), ("magic", "H"), ("pad", "H"),
], size=12)
xfs_da3_blkinfo = CStruct("xfs_da3_blkinfo", ">", [
    ("forw", "I"), ("back", "I"), ("magic", "H"), ("pad", "H"), ("crc", "4s"), ("blkno", "Q"),
    ("lsn", "Q"), ("uuid", "16s"), ("owner", "Q"),
], size=56)
XFS_DA3_BLKINFO_CRC_OFF = 12
xfs_da_node_hdr = CStruct("xfs_da_node_hdr", ">", [("count", "H"), ("level", "H")], size=4)
XFS_DA_NODE_HDR_SIZE = 16
XFS_DA3_NODE_HDR_SIZE = 64
xfs_da_node_entry = struct.Struct(">II")  # hashval, before
XFS_DA_NODE_MAXDEPTH = 5

# directory block header shared by data, block and free blocks in v5
xfs_dir3_blk_hdr = CStruct("xfs_dir3_blk_hdr", ">", [
    ("magic", "I"), ("crc", "4s"), ("blkno", "Q"), ("lsn", "Q"), ("uuid", "16s"), ("owner", "Q"),
], size=48)
XFS_DIR3_BLK_HDR_CRC_OFF = 4
XFS_DIR2_DATA_HDR_SIZE = 16  # magic + bestfree[3]
XFS_DIR3_DATA_HDR_SIZE = 64  # blk hdr + bestfree[3] + pad
XFS_DIR2_DATA_FREE_TAG = 0xFFFF
XFS_DIR2_DATA_ALIGN = 8
XFS_DIR2_LEAF_HDR_SIZE = 16
XFS_DIR3_LEAF_HDR_SIZE = 64
xfs_dir2_leaf_entry = struct.Struct(">II")  # hashval, address
xfs_dir2_block_tail = struct.Struct(">II")  # count, stale
XFS_DIR2_NULL_DATAPTR = 0
# the directory address space: data blocks, then leaf blocks at 32 GiB, free index at 64 GiB
XFS_DIR2_SPACE_SIZE = 1 << 35
XFS_DIR2_LEAF_OFFSET = XFS_DIR2_SPACE_SIZE
XFS_DIR2_FREE_OFFSET = 2 * XFS_DIR2_SPACE_SIZE

XFS_DIR3_FT_UNKNOWN = 0
XFS_DIR3_FT_REG_FILE = 1
XFS_DIR3_FT_DIR = 2
XFS_DIR3_FT_CHRDEV = 3
XFS_DIR3_FT_BLKDEV = 4
XFS_DIR3_FT_FIFO = 5
XFS_DIR3_FT_SOCK = 6
XFS_DIR3_FT_SYMLINK = 7
XFS_DIR3_FT_WHT = 8
# d_type for each xfs file type (DT_UNKNOWN for unknown or without ftype)
FTYPE_TO_DT = (0, 8, 4, 2, 6, 1, 12, 10, 14)

# shortform directory header: count, i8count, parent (4 or 8 bytes)
xfs_dir2_sf_hdr = struct.Struct(">BB")

# -- extended attributes ---------------------------------------------------------------------
xfs_attr_sf_hdr = CStruct("xfs_attr_sf_hdr", ">", [
    ("totsize", "H"), ("count", "B"), ("padding", "B"),
], size=4)
xfs_attr_sf_entry = struct.Struct(">BBB")  # namelen, valuelen, flags
XFS_ATTR_LEAF_HDR_SIZE = 32
XFS_ATTR3_LEAF_HDR_SIZE = 80
xfs_attr_leaf_hdr_tail = CStruct("xfs_attr_leaf_hdr", ">", [
    ("count", "H"), ("usedbytes", "H"), ("firstused", "H"), ("holes", "B"), ("pad1", "B"),
], size=8)
xfs_attr_leaf_entry = struct.Struct(">IHBB")  # hashval, nameidx, flags, pad2
xfs_attr_leaf_name_local = struct.Struct(">HB")  # valuelen, namelen
xfs_attr_leaf_name_remote = struct.Struct(">IIB")  # valueblk, valuelen, namelen

XFS_ATTR_LOCAL = 1 << 0
XFS_ATTR_ROOT = 1 << 1
XFS_ATTR_SECURE = 1 << 2
XFS_ATTR_PARENT = 1 << 3
XFS_ATTR_INCOMPLETE = 1 << 7
XFS_ATTR_NSP_ONDISK_MASK = XFS_ATTR_ROOT | XFS_ATTR_SECURE | XFS_ATTR_PARENT

XFS_ATTR3_RMT_MAGIC = 0x5841524D  # "XARM"
xfs_attr3_rmt_hdr = CStruct("xfs_attr3_rmt_hdr", ">", [
    ("rm_magic", "I"), ("rm_offset", "I"), ("rm_bytes", "I"), ("rm_crc", "4s"),
    ("rm_uuid", "16s"), ("rm_owner", "Q"), ("rm_blkno", "Q"), ("rm_lsn", "Q"),
], size=56)
XFS_ATTR3_RMT_CRC_OFF = 12

# on-disk POSIX ACL (trusted.SGI_ACL_FILE / SGI_ACL_DEFAULT)
SGI_ACL_FILE = b"SGI_ACL_FILE"
SGI_ACL_DEFAULT = b"SGI_ACL_DEFAULT"
xfs_acl_hdr = struct.Struct(">I")
xfs_acl_entry = struct.Struct(">IIHH")  # ae_tag, ae_id, ae_perm, ae_pad

# -- symlinks -----------------------------------------------------------------------------------
XFS_SYMLINK_MAGIC = 0x58534C4D  # "XSLM"
xfs_dsymlink_hdr = CStruct("xfs_dsymlink_hdr", ">", [
    ("sl_magic", "I"), ("sl_offset", "I"), ("sl_bytes", "I"), ("sl_crc", "4s"),
    ("sl_uuid", "16s"), ("sl_owner", "Q"), ("sl_blkno", "Q"), ("sl_lsn", "Q"),
], size=56)
XFS_SYMLINK_CRC_OFF = 12
XFS_SYMLINK_MAXLEN = 1024

# -- the log --------------------------------------------------------------------------------------
XLOG_HEADER_MAGIC_NUM = 0xFEEDBABE
XLOG_HEADER_CYCLE_SIZE = 32 * 1024
XLOG_CYCLE_DATA_SIZE = XLOG_HEADER_CYCLE_SIZE // BBSIZE  # 64 words per header
XLOG_VERSION_1 = 1
XLOG_VERSION_2 = 2
XLOG_FMT_LINUX_LE = 1
XLOG_FMT_LINUX_BE = 2
xlog_rec_header = CStruct("xlog_rec_header", ">", [
    ("h_magicno", "I"), ("h_cycle", "I"), ("h_version", "I"), ("h_len", "I"), ("h_lsn", "Q"),
    ("h_tail_lsn", "Q"), ("h_crc", "4s"), ("h_prev_block", "i"), ("h_num_logops", "i"),
    ("h_cycle_data", "256s"), ("h_fmt", "i"), ("h_fs_uuid", "16s"), ("h_size", "i"),
    ("h_pad", "4x"),
], size=328)
XLOG_REC_CRC_OFF = 32
XLOG_REC_CYCLE_DATA_OFF = 44
xlog_rec_ext_header = CStruct("xlog_rec_ext_header", ">", [
    ("xh_cycle", "I"), ("xh_cycle_data", "256s"),
], size=260)

xlog_op_header = CStruct("xlog_op_header", ">", [
    ("oh_tid", "I"), ("oh_len", "I"), ("oh_clientid", "B"), ("oh_flags", "B"), ("oh_res2", "H"),
], size=12)
XLOG_START_TRANS = 0x01
XLOG_COMMIT_TRANS = 0x02
XLOG_CONTINUE_TRANS = 0x04
XLOG_WAS_CONT_TRANS = 0x08
XLOG_END_TRANS = 0x10
XLOG_UNMOUNT_TRANS = 0x20
XFS_TRANSACTION = 0x69
XFS_VOLUME = 0x2
XFS_LOG = 0xAA

XFS_TRANS_HEADER_MAGIC = 0x5452414E  # "TRAN", in the writer's byte order
xfs_trans_header_fmt = "IIiI"  # th_magic, th_type, th_tid, th_num_items

# log item types (the first 16-bit word of every item's format region)
XFS_LI_EFI = 0x1236
XFS_LI_EFD = 0x1237
XFS_LI_IUNLINK = 0x1238
XFS_LI_INODE = 0x123B
XFS_LI_BUF = 0x123C
XFS_LI_DQUOT = 0x123D
XFS_LI_QUOTAOFF = 0x123E
XFS_LI_ICREATE = 0x123F
XFS_LI_RUI = 0x1240
XFS_LI_RUD = 0x1241
XFS_LI_CUI = 0x1242
XFS_LI_CUD = 0x1243
XFS_LI_BUI = 0x1244
XFS_LI_BUD = 0x1245
XFS_LI_ATTRI = 0x1246
XFS_LI_ATTRD = 0x1247
XFS_LI_XMI = 0x1248
XFS_LI_XMD = 0x1249

# buffer log format: type, size, flags, len, blkno, map_size, then the dirty bitmap
xfs_buf_log_format_fmt = "HHHHqI"
XFS_BLF_INODE_BUF = 0x1
XFS_BLF_CANCEL = 0x2
XFS_BLF_UDQUOT_BUF = 0x4
XFS_BLF_PDQUOT_BUF = 0x8
XFS_BLF_GDQUOT_BUF = 0x10
XFS_BLF_CHUNK = 128
XFS_BLF_SHIFT = 7
XFS_BLF_DATAMAP_SIZE = 17  # ((XFS_MAX_BLOCKSIZE / XFS_BLF_CHUNK) / NBWORD) + 1

# inode log format (the 56-byte 64-bit layout and the packed 52-byte 32-bit one)
xfs_inode_log_format_fmt = "HHIHHIQ16sqii"
xfs_inode_log_format_32_fmt = "HHIHHQ16sqii"
XFS_ILOG_CORE = 0x001
XFS_ILOG_DDATA = 0x002
XFS_ILOG_DEXT = 0x004
XFS_ILOG_DBROOT = 0x008
XFS_ILOG_DEV = 0x010
XFS_ILOG_UUID = 0x020
XFS_ILOG_ADATA = 0x040
XFS_ILOG_AEXT = 0x080
XFS_ILOG_ABROOT = 0x100
XFS_ILOG_DOWNER = 0x200
XFS_ILOG_AOWNER = 0x400

# the logged in-core inode (xfs_log_dinode), in the writer's byte order
# same offsets as xfs_dinode (di_onlink is padding there); timestamps are native 64-bit
# words (bigtime) or native {int32 sec, int32 nsec} pairs
XFS_LOG_DINODE_FIELDS = [(n if n != "di_onlink" else "di_pad3", f) for n, f in xfs_dinode_fields]
XFS_LOG_DINODE_V3_SIZE = 176
XFS_LOG_DINODE_V2_SIZE = 100
XFS_DI_MAX_FLUSH = 0xFFFF

# inode allocation (icreate) item, always big-endian
xfs_icreate_log = CStruct("xfs_icreate_log", ">", [
    ("icl_type", "H"), ("icl_size", "H"), ("icl_ag", "I"), ("icl_agbno", "I"),
    ("icl_count", "I"), ("icl_isize", "I"), ("icl_length", "I"), ("icl_gen", "I"),
], size=28)

ALL_STRUCTS = (xfs_dsb, xfs_agf, xfs_agi, xfs_agfl, xfs_btree_sblock, xfs_btree_lblock,
               xfs_bmdr_block, xfs_dinode, xfs_da_blkinfo, xfs_da3_blkinfo, xfs_da_node_hdr,
               xfs_dir3_blk_hdr, xfs_attr_sf_hdr, xfs_attr_leaf_hdr_tail, xfs_attr3_rmt_hdr,
               xfs_dsymlink_hdr, xlog_rec_header, xlog_rec_ext_header, xlog_op_header,
               xfs_icreate_log)
