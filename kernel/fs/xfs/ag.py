"""Allocation group headers (libxfs/xfs_alloc.c, xfs_ialloc.c): AGF and AGI.

Each AG starts with the superblock copy (sector 0), the AGF (free space,
sector 1), the AGI (inodes, sector 2) and the AGFL (sector 3). The driver
reads them for statfs; each is verified (magic, sequence number, and on v5
the CRC over its sector and the UUID).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import corrupted
from . import ondisk as od
from .cksum import crc_ok

if TYPE_CHECKING:
    from .super import XfsSuper


def _read_sector(sb: XfsSuper, agno: int, sector: int) -> bytes:
    geo = sb.geo
    off = agno * geo.agblocks * geo.blocksize + sector * geo.sectsize
    return bytes(sb.xdev.read(off, geo.sectsize))


def read_agf(sb: XfsSuper, agno: int) -> Any:
    """The verified AGF of AG ``agno`` (EUCLEAN naming it otherwise)."""
    data = _read_sector(sb, agno, 1)
    what = f"AGF of AG {agno}"
    agf = od.xfs_agf.unpack_from(data, 0)
    geo = sb.geo
    if agf.agf_magicnum != od.XFS_AGF_MAGIC or agf.agf_versionnum != 1 or agf.agf_seqno != agno:
        raise corrupted(what, "bad magic, version or sequence number")
    if geo.crc and (not crc_ok(data, od.XFS_AGF_CRC_OFF) or agf.agf_uuid != geo.meta_uuid):
        raise corrupted(what, "metadata checksum mismatch")
    if agf.agf_length != geo.ag_length(agno) or agf.agf_freeblks > agf.agf_length:
        raise corrupted(what, f"bad length {agf.agf_length} or free count {agf.agf_freeblks}")
    return agf


def read_agi(sb: XfsSuper, agno: int) -> Any:
    """The verified AGI of AG ``agno`` (EUCLEAN naming it otherwise)."""
    data = _read_sector(sb, agno, 2)
    what = f"AGI of AG {agno}"
    agi = od.xfs_agi.unpack_from(data, 0)
    geo = sb.geo
    if agi.agi_magicnum != od.XFS_AGI_MAGIC or agi.agi_versionnum != 1 or agi.agi_seqno != agno:
        raise corrupted(what, "bad magic, version or sequence number")
    if geo.crc and (not crc_ok(data, od.XFS_AGI_CRC_OFF) or agi.agi_uuid != geo.meta_uuid):
        raise corrupted(what, "metadata checksum mismatch")
    if agi.agi_freecount > agi.agi_count:
        raise corrupted(what, "more free inodes than inodes")
    return agi
