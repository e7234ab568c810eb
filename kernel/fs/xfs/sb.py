"""The superblock: validation and the geometry derived from it (libxfs/xfs_sb.c).

``XfsGeometry`` plays the part of ``struct xfs_mount``'s geometry fields:
every size, shift and feature flag the rest of the driver needs, computed
once from a validated superblock.
"""

from __future__ import annotations

import errno
from typing import Any

from ...errors import corrupted, kerr
from . import ondisk as od
from .cksum import verify_crc


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _log2(v: int) -> int:
    return v.bit_length() - 1


class XfsGeometry:
    """Validated superblock fields and derived geometry (xfs_mount)."""

    def __init__(self, sb: Any, raw: bytes) -> None:
        self.sb = sb
        self.raw = raw
        self.version = sb.sb_versionnum & od.XFS_SB_VERSION_NUMBITS
        self.crc = self.version == od.XFS_SB_VERSION_5
        self.blocksize: int = sb.sb_blocksize
        self.blocklog: int = sb.sb_blocklog
        self.sectsize: int = sb.sb_sectsize
        self.inodesize: int = sb.sb_inodesize
        self.inodelog: int = sb.sb_inodelog
        self.inopblock: int = sb.sb_inopblock
        self.inopblog: int = sb.sb_inopblog
        self.agblocks: int = sb.sb_agblocks
        self.agblklog: int = sb.sb_agblklog
        self.agcount: int = sb.sb_agcount
        self.dblocks: int = sb.sb_dblocks
        self.agino_log = self.agblklog + self.inopblog
        self.dirblklog: int = sb.sb_dirblklog
        self.dirblksize = self.blocksize << self.dirblklog
        self.dirblkfsbs = 1 << self.dirblklog
        self.rootino: int = sb.sb_rootino
        self.uuid: bytes = sb.sb_uuid
        self.features2 = sb.sb_features2 | sb.sb_bad_features2 \
            if sb.sb_versionnum & od.XFS_SB_VERSION_MOREBITSBIT else 0
        incompat = sb.sb_features_incompat if self.crc else 0
        self.incompat = incompat
        self.ro_compat = sb.sb_features_ro_compat if self.crc else 0
        self.log_incompat = sb.sb_features_log_incompat if self.crc else 0
        self.meta_uuid: bytes = sb.sb_meta_uuid \
            if incompat & od.XFS_SB_FEAT_INCOMPAT_META_UUID else sb.sb_uuid
        self.ftype = bool(incompat & od.XFS_SB_FEAT_INCOMPAT_FTYPE) if self.crc \
            else bool(self.features2 & od.XFS_SB_VERSION2_FTYPE)
        self.bigtime = bool(incompat & od.XFS_SB_FEAT_INCOMPAT_BIGTIME)
        self.nrext64 = bool(incompat & od.XFS_SB_FEAT_INCOMPAT_NREXT64)
        self.parent = bool(incompat & od.XFS_SB_FEAT_INCOMPAT_PARENT)
        self.asciici = bool(sb.sb_versionnum & od.XFS_SB_VERSION_BORGBIT)
        self.dinode_core = od.XFS_DINODE_V3_CORE if self.crc else od.XFS_DINODE_V2_CORE
        self.logstart: int = sb.sb_logstart
        self.logblocks: int = sb.sb_logblocks
        self.logv2 = bool(sb.sb_versionnum & od.XFS_SB_VERSION_LOGV2BIT) or self.crc
        self.logsectsize = sb.sb_logsectsize or od.BBSIZE
        self.logsunit: int = sb.sb_logsunit
        # inode clusters: 8 KiB, scaled with the inode size on v5 (xfs_ialloc_setup_geometry)
        cluster = 8192
        if self.crc:
            cluster = cluster * self.inodesize // 256
        self.blocks_per_cluster = max(1, cluster // self.blocksize)
        align = sb.sb_inoalignmt if sb.sb_versionnum & od.XFS_SB_VERSION_ALIGNBIT else 0
        if align == 0 or align % self.blocks_per_cluster:
            self.blocks_per_cluster = 1  # clusters are not aligned: read single blocks
        # a directory's data, leaf and free spaces in filesystem blocks
        self.dir_leaf_fsb = od.XFS_DIR2_LEAF_OFFSET >> self.blocklog
        self.dir_free_fsb = od.XFS_DIR2_FREE_OFFSET >> self.blocklog
        self.dir_data_hdr = od.XFS_DIR3_DATA_HDR_SIZE if self.crc else od.XFS_DIR2_DATA_HDR_SIZE
        self.realtime = sb.sb_rblocks > 0

    # -- address conversions ------------------------------------------------------------
    def ag_length(self, agno: int) -> int:
        """Blocks in AG ``agno`` (the last one may be short)."""
        if agno == self.agcount - 1:
            return self.dblocks - agno * self.agblocks
        return self.agblocks

    def fsb_to_linear(self, fsbno: int, count: int, what: str) -> int:
        """An AG-encoded filesystem block (and run length) as a linear block number.

        Raises EUCLEAN naming ``what`` when the run lies outside its AG.
        """
        agno = fsbno >> self.agblklog
        agbno = fsbno & ((1 << self.agblklog) - 1)
        if agno >= self.agcount or agbno + count > self.ag_length(agno) or count <= 0:
            raise corrupted(what, f"block {fsbno:#x} (AG {agno} block {agbno}, {count} blocks) "
                            "is outside the filesystem")
        return agno * self.agblocks + agbno

    def linear_to_daddr(self, blk: int) -> int:
        return blk << (self.blocklog - od.BBSHIFT)

    def ino_location(self, ino: int) -> tuple[int, int, int]:
        """(agno, agbno, index in block) of inode ``ino``; EUCLEAN if impossible."""
        agno = ino >> self.agino_log
        agino = ino & ((1 << self.agino_log) - 1)
        agbno = agino >> self.inopblog
        if agno >= self.agcount or agbno >= self.ag_length(agno) or agino == 0 and agno == 0 \
                or ino >> 56:
            raise corrupted(f"inode {ino}", "inode number outside the filesystem")
        return agno, agbno, agino & (self.inopblock - 1)

    def valid_ino(self, ino: int) -> bool:
        try:
            self.ino_location(ino)
        except OSError:
            return False
        return True


def read_geometry(data: bytes | bytearray | memoryview, devsize: int, what: str = "superblock",
                  ) -> XfsGeometry:
    """Validate the primary superblock in ``data`` (at least one sector).

    Raises EINVAL when it is not XFS at all, EUCLEAN for a damaged or
    inconsistent superblock, EOPNOTSUPP for features this driver lacks.
    """
    if len(data) < 512:
        raise kerr(errno.EINVAL, what, "device too small for an XFS superblock")
    sb = od.xfs_dsb.unpack_from(data, 0)
    if sb.sb_magicnum != od.XFS_SB_MAGIC:
        raise kerr(errno.EINVAL, what, "bad XFS superblock magic")
    ver = sb.sb_versionnum & od.XFS_SB_VERSION_NUMBITS
    if ver not in (od.XFS_SB_VERSION_4, od.XFS_SB_VERSION_5):
        if ver in (1, 2, 3):
            raise kerr(errno.EOPNOTSUPP, what, f"xfs: superblock version {ver} is not supported")
        raise corrupted(what, f"bad superblock version {ver}")
    bad = _check_fields(sb)
    if bad:
        raise corrupted(what, bad)
    if ver == od.XFS_SB_VERSION_5:
        if len(data) < sb.sb_sectsize:
            raise corrupted(what, "short superblock sector")
        verify_crc(data[:sb.sb_sectsize], od.XFS_SB_CRC_OFF, what)
    geo = XfsGeometry(sb, bytes(data[:sb.sb_sectsize]))
    if not sb.sb_versionnum & od.XFS_SB_VERSION_DIRV2BIT:
        raise kerr(errno.EOPNOTSUPP, what, "xfs: version 1 directories are not supported")
    known = (od.XFS_SB_FEAT_INCOMPAT_FTYPE | od.XFS_SB_FEAT_INCOMPAT_SPINODES
             | od.XFS_SB_FEAT_INCOMPAT_META_UUID | od.XFS_SB_FEAT_INCOMPAT_BIGTIME
             | od.XFS_SB_FEAT_INCOMPAT_NREXT64 | od.XFS_SB_FEAT_INCOMPAT_EXCHRANGE
             | od.XFS_SB_FEAT_INCOMPAT_PARENT | od.XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR)
    unknown = geo.incompat & ~known
    if unknown:
        names = [od.INCOMPAT_NAMES.get(1 << b, f"{1 << b:#x}") for b in range(32)
                 if unknown & (1 << b)]
        raise kerr(errno.EOPNOTSUPP, what,
                   "xfs: unsupported incompatible features: " + ", ".join(names))
    if geo.incompat & od.XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR:
        raise corrupted(what, "the filesystem needs xfs_repair (needsrepair feature set)")
    if sb.sb_inprogress:
        raise corrupted(what, "mkfs did not finish (sb_inprogress set)")
    if geo.dblocks * geo.blocksize > devsize:
        raise corrupted(what, f"filesystem of {geo.dblocks} blocks is larger than the device "
                        f"({devsize} bytes)")
    return geo


def _check_fields(sb: Any) -> str | None:
    """What is inconsistent in the superblock geometry, or None (xfs_validate_sb_common)."""
    bs = sb.sb_blocksize
    if not _is_pow2(bs) or not 512 <= bs <= 65536 or _log2(bs) != sb.sb_blocklog:
        return f"bad block size {bs}"
    ss = sb.sb_sectsize
    if not _is_pow2(ss) or not 512 <= ss <= 32768 or _log2(ss) != sb.sb_sectlog or ss > bs:
        return f"bad sector size {ss}"
    isz = sb.sb_inodesize
    if not _is_pow2(isz) or not 256 <= isz <= 2048 or _log2(isz) != sb.sb_inodelog or isz > bs:
        return f"bad inode size {isz}"
    if (sb.sb_versionnum & od.XFS_SB_VERSION_NUMBITS) == 5 and isz < 512:
        return f"inode size {isz} too small for a v5 filesystem"
    if sb.sb_inopblock != bs // isz or _log2(sb.sb_inopblock) != sb.sb_inopblog:
        return "bad inodes per block"
    if sb.sb_agcount == 0 or sb.sb_agblocks < 1 or sb.sb_agblocks > (1 << 31) - 1:
        return f"bad AG geometry ({sb.sb_agcount} AGs of {sb.sb_agblocks} blocks)"
    if sb.sb_agblklog != (sb.sb_agblocks - 1).bit_length():
        return f"agblklog {sb.sb_agblklog} does not match {sb.sb_agblocks} blocks per AG"
    if sb.sb_agblklog + sb.sb_inopblog > 32 + 24:
        return "inode numbers too large"
    ag = sb.sb_agblocks
    if sb.sb_dblocks > sb.sb_agcount * ag or sb.sb_dblocks <= (sb.sb_agcount - 1) * ag:
        return f"{sb.sb_dblocks} blocks do not fit {sb.sb_agcount} AGs of {ag} blocks"
    if (bs << sb.sb_dirblklog) > 65536:
        return f"directory block size {bs << sb.sb_dirblklog} too large"
    if sb.sb_logstart:
        agno = sb.sb_logstart >> sb.sb_agblklog
        agbno = sb.sb_logstart & ((1 << sb.sb_agblklog) - 1)
        if agno >= sb.sb_agcount or agbno + sb.sb_logblocks > ag or sb.sb_logblocks < 64:
            return "internal log outside its AG"
    return None
