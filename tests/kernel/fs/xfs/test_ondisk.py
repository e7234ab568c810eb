"""On-disk structure sizes (as xfs_ondisk.h asserts them) and the name hash."""

from __future__ import annotations

import re

import pytest
from helpers import need_tool, run

from kernel.fs.xfs import ondisk as od
from kernel.fs.xfs.da_btree import da_hashname

SIZES = {
    "xfs_dsb": 264, "xfs_agf": 224, "xfs_agi": 344, "xfs_agfl": 36, "xfs_btree_sblock": 56,
    "xfs_btree_lblock": 72, "xfs_bmdr_block": 4, "xfs_dinode": 176, "xfs_da_blkinfo": 12,
    "xfs_da3_blkinfo": 56, "xfs_da_node_hdr": 4, "xfs_dir3_blk_hdr": 48, "xfs_attr_sf_hdr": 4,
    "xfs_attr_leaf_hdr": 8, "xfs_attr3_rmt_hdr": 56, "xfs_dsymlink_hdr": 56,
    "xlog_rec_header": 328, "xlog_rec_ext_header": 260, "xlog_op_header": 12,
    "xfs_icreate_log": 28,
}


@pytest.mark.parametrize("st", od.ALL_STRUCTS, ids=lambda s: s.name)
def test_struct_size(st: od.CStruct) -> None:  # type: ignore[name-defined]
    assert st.size == SIZES[st.name]


@pytest.mark.parametrize("field,offset", [
    ("sb_crc", od.XFS_SB_CRC_OFF), ("sb_features_incompat", 216), ("sb_meta_uuid", 248)])
def test_sb_offsets(field: str, offset: int) -> None:
    assert od.xfs_dsb.offset_of(field) == offset


@pytest.mark.parametrize("st,field,offset", [
    (od.xfs_dinode, "di_crc", od.XFS_DINODE_CRC_OFF), (od.xfs_dinode, "di_next_unlinked", 96),
    (od.xfs_dinode, "di_lsn", od.XFS_DINODE_LSN_OFF), (od.xfs_dinode, "di_ino", 152),
    (od.xfs_agf, "agf_crc", od.XFS_AGF_CRC_OFF), (od.xfs_agi, "agi_crc", od.XFS_AGI_CRC_OFF),
    (od.xfs_agfl, "agfl_crc", od.XFS_AGFL_CRC_OFF),
    (od.xfs_btree_lblock, "bb_crc", od.XFS_BTREE_LBLOCK_CRC_OFF),
    (od.xfs_btree_sblock, "bb_crc", od.XFS_BTREE_SBLOCK_CRC_OFF),
    (od.xlog_rec_header, "h_crc", od.XLOG_REC_CRC_OFF),
    (od.xfs_da3_blkinfo, "crc", od.XFS_DA3_BLKINFO_CRC_OFF),
])
def test_field_offsets(st: object, field: str, offset: int) -> None:
    assert st.offset_of(field) == offset  # type: ignore[attr-defined]


def test_hash_matches_xfs_db(tmp_path) -> None:
    """da_hashname agrees with xfs_db's "hash" command on names of every length."""
    need_tool("xfs_db", "mkfs.xfs")
    img = tmp_path / "h.img"
    with open(img, "wb") as f:
        f.truncate(300 << 20)
    run("mkfs.xfs", "-q", img)
    names = [b"a", b"ab", b"abc", b"abcd", b"entry-000123-abcdefg", b"\xff\xfe\x80" * 30, b"x" * 255]
    cmds: list[str] = []
    for n in names:
        cmds += ["-c", "hash " + n.decode("latin-1")]
    out = run("xfs_db", "-r", *cmds, img).stdout.split()
    assert len(out) == len(names)
    for n, h in zip(names, out):
        if any(c >= 0x80 for c in n):
            continue  # xfs_db takes its argument through the locale
        assert da_hashname(n) == int(h, 16), n
    assert re.fullmatch(r"0x[0-9a-f]+", out[0])
