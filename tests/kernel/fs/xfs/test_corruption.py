"""Damaged images: the right errno, naming the structure, and never a hang or wrong data."""

from __future__ import annotations

import errno
import random
import re

import pytest
import treeutil
from helpers import need_tool, run

import kernel
from kernel import Kernel


def flip(img, offset: int, n: int = 1) -> None:
    with open(img, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in data))


def db(img, *cmds: str) -> str:
    args: list[str] = []
    for c in cmds:
        args += ["-c", c]
    return run("xfs_db", "-r", *args, img).stdout


def byte_of_fsblock(img, fsb: int) -> int:
    return int(re.search(r"\((\d+)\)", db(img, f"convert fsblock {fsb} byte"))[1])


def ino_of(img, path: str) -> int:
    return int(re.search(r"inode (\d+)", db(img, f"path /{path}", "stack"))[1])


def first_block(img, ino: int, attr: bool = False) -> int:
    out = db(img, f"inode {ino}", "bmap -a" if attr else "bmap")
    return int(re.search(r"startblock (\d+)", out)[1])


def mounted(img):
    k = Kernel(mb=32)
    disk = k.disk_add(img, readonly=True)
    return k, k.mount_dev(disk, flags=kernel.MS_RDONLY)


def expect_euclean(fn, what: str) -> None:
    with pytest.raises(OSError) as ei:
        fn()
    assert ei.value.errno == errno.EUCLEAN, ei.value
    assert what in str(ei.value), ei.value


@pytest.fixture
def v5(xfs_copy):
    need_tool("xfs_db")
    return xfs_copy("xfs-v5")


def test_inode_checksum(v5) -> None:
    ino = ino_of(v5, "small.txt")
    off = int(re.search(r"\((\d+)\)", db(v5, f"convert ino {ino} byte"))[1])
    flip(v5, off + 40)  # inside di_mtime
    k, root = mounted(v5)
    with k:
        expect_euclean(lambda: k.sys.lstat(root + "/small.txt"), f"inode {ino}")
        assert k.sys.lstat(root + "/empty").st_size == 0  # the rest stays readable


def test_directory_block_checksum(v5) -> None:
    ino = ino_of(v5, "dirs/block")
    flip(v5, byte_of_fsblock(v5, first_block(v5, ino)) + 200)
    k, root = mounted(v5)
    with k:
        expect_euclean(lambda: k.sys.lstat(root + "/dirs/block/e00001x"), "directory block")


def test_leaf_and_node_blocks(v5) -> None:
    ino = ino_of(v5, "dirs/node")
    out = db(v5, f"inode {ino}", "bmap")
    leaf = [int(m[1]) for m in re.finditer(r"data offset (\d+) startblock (\d+)", out)
            if int(m[1]) >= (1 << 35) // 4096]
    blocks = re.findall(r"data offset (\d+) startblock (\d+)", out)
    fsb = next(int(b) + (1 << 35) // 4096 - int(o) for o, b in blocks
               if int(o) <= (1 << 35) // 4096 < int(o) + 1) if not leaf else \
        next(int(b) for o, b in blocks if int(o) == leaf[0])
    flip(v5, byte_of_fsblock(v5, fsb) + 100)
    k, root = mounted(v5)
    with k:
        expect_euclean(lambda: k.sys.lstat(root + "/dirs/node/e00001x"), "directory inode")


def test_bmap_btree_block(v5) -> None:
    ino = ino_of(v5, "fragmented.bin")
    ptr = int(re.search(r"u3\.bmbt\.ptrs\[1\] = (\d+)", db(v5, f"inode {ino}", "print u3.bmbt"))[1])
    flip(v5, byte_of_fsblock(v5, ptr) + 300)
    k, root = mounted(v5)
    with k:
        fd = k.sys.open(root + "/fragmented.bin", kernel.O_RDONLY)
        expect_euclean(lambda: k.sys.read(fd, 4096), "bmap btree block")


def test_attr_leaf_and_remote_blocks(v5) -> None:
    ino = ino_of(v5, "xattrs/leaf")
    flip(v5, byte_of_fsblock(v5, first_block(v5, ino, attr=True)) + 500)
    ino2 = ino_of(v5, "links/long")
    flip(v5, byte_of_fsblock(v5, first_block(v5, ino2)) + 100)
    k, root = mounted(v5)
    with k:
        expect_euclean(lambda: k.sys.llistxattr(root + "/xattrs/leaf"), "attribute")
        expect_euclean(lambda: k.sys.readlink(root + "/links/long"), "symlink")
        assert k.sys.readlink(root + "/links/short") == b"../small.txt"


def test_superblock_and_agf(v5) -> None:
    flip(v5, 512 + 60)  # AGF 0 free block count
    k, root = mounted(v5)
    with k:
        expect_euclean(lambda: k.sys.statfs(root), "AGF of AG 0")
    flip(v5, 150)  # superblock counters: CRC mismatch
    with Kernel(mb=32) as k:
        disk = k.disk_add(v5, readonly=True)
        expect_euclean(lambda: k.mount_dev(disk, fstype="xfs", flags=kernel.MS_RDONLY),
                       "superblock")


def test_v4_structure_checks(xfs_copy) -> None:
    """Without CRCs the structural checks catch damage: a directory block's magic."""
    need_tool("xfs_db")
    img = xfs_copy("xfs-v4")
    ino = ino_of(img, "block")
    flip(img, byte_of_fsblock(img, first_block(img, ino)), 4)
    k, root = mounted(img)
    with k:
        expect_euclean(lambda: k.sys.lstat(root + "/block/block-entry-00001"), "directory block")


def test_damaged_log_record(xfs_copy) -> None:
    """A damaged record in the part of the log to replay fails the mount with EUCLEAN."""
    need_tool("xfs_db", "xfs_logprint")
    img = xfs_copy("xfs-dirty")
    sb = db(img, "sb 0", "print logstart blocksize")
    logstart = int(re.search(r"logstart = (\d+)", sb)[1])
    out = run("xfs_logprint", "-d", img).stdout
    # a record well inside the tail..head range (the last header names the tail)
    headers = [(int(m[1]), int(m[2])) for m in
               re.finditer(r"^\s*(\d+) HEADER Cycle [1-9]\d* tail \d+:(\d+)", out, re.M)]
    tail = max(t for _b, t in headers)
    blocks = [b for b, _t in headers if b > tail + 64]
    assert len(blocks) > 2, out[:2000]
    off = byte_of_fsblock(img, logstart) + blocks[len(blocks) // 2] * 512
    flip(img, off + 512 + 40)
    with Kernel(mb=32) as k:
        disk = k.disk_add(img, readonly=True)
        expect_euclean(lambda: k.mount_dev(disk, flags=kernel.MS_RDONLY), "log")


@pytest.mark.slow
def test_random_damage_only_gives_oserrors(xfs_copy) -> None:
    """Random byte flips in inode and directory blocks: an OSError or correct data, never
    another exception and never a hang."""
    img = xfs_copy("xfs-v4")
    size = 4 << 20  # AG 0's inode chunks and directory blocks live here
    rng = random.Random(10)
    with open(img, "rb") as f:
        region = f.read(size)
    for _ in range(25):
        offs = [rng.randrange(4096, size) for _ in range(8)]
        for o in offs:
            flip(img, o)
        try:
            with Kernel(mb=16) as k:
                disk = k.disk_add(img, readonly=True)
                root = k.mount_dev(disk, flags=kernel.MS_RDONLY)
                treeutil.kernel_manifest(k.sys, root, xattrs=False)
        except OSError:
            pass
        with open(img, "r+b") as f:
            f.write(region)


def test_data_block_record_cut_by_the_block_end_is_euclean() -> None:
    """A used entry whose first 8 bytes end the block (found by the fuzzer: its name length
    was read past the block, an IndexError): EUCLEAN naming the block, as is a leaf
    pointer there."""
    from kernel.fs.xfs import dir2_data

    hdr, size = 16, 64
    for last in (8, 12):  # the bytes left for the record at the end
        block = bytearray(size)
        gap = size - hdr - last
        block[hdr:hdr + 4] = (0xFFFF).to_bytes(2, "big") + gap.to_bytes(2, "big")
        block[size - last:size - last + 8] = (133).to_bytes(8, "big")  # an inumber
        with pytest.raises(OSError) as e:
            list(dir2_data.iter_entries(memoryview(bytes(block)), 0, size, True, hdr,
                                        "xfs directory block 7"))
        assert e.value.errno == errno.EUCLEAN and "block 7" in str(e.value)
        with pytest.raises(OSError) as e:
            dir2_data.entry_at(memoryview(bytes(block)), size - last, size + 64, True, hdr,
                               "xfs directory block 7")
        assert e.value.errno == errno.EUCLEAN
