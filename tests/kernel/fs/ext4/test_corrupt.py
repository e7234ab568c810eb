"""Damaged images: a clear errno naming the structure, never a traceback or wrong data.

Locations come from debugfs (recorded by make_ext4.py in the image's JSON).
"""

from __future__ import annotations

import errno
import random

import pytest
from ext4util import expected, mount, readdir_names, unpack
from treeutil import kernel_manifest

import kernel
from kernel import Kernel
from kernel.fs.ext4.balloc import read_block_bitmap
from kernel.fs.ext4.ialloc import read_inode_bitmap


def _flip(path, offset: int, mask: int = 0x5A) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


def _expect(code: int, words: str, fn, *args) -> None:
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, e.value
    for w in words.split():
        assert w in str(e.value), e.value


def test_inode_checksum(tmp_path) -> None:
    loc = expected("basic")["meta"]["locations"]
    img = unpack("basic", tmp_path)
    _flip(img, loc["inode_block"] * loc["block_size"] + loc["inode_offset"] + 4)  # i_size_lo
    with Kernel(mb=32) as k:
        root = mount(k, img)
        _expect(errno.EBADMSG, "inode checksum", k.sys.lstat, root + loc["file"])
        k.sys.lstat(root + "/onek")  # the rest of the filesystem still reads


def test_superblock_checksum(tmp_path) -> None:
    img = unpack("basic", tmp_path)
    _flip(img, 1024 + 0x78)  # s_volume_name
    with Kernel(mb=32) as k:
        _expect(errno.EBADMSG, "superblock checksum", mount, k, img)


def test_group_descriptor_checksum(tmp_path) -> None:
    loc = expected("basic")["meta"]["locations"]
    img = unpack("basic", tmp_path)
    _flip(img, loc["block_size"] + 0x0C)  # group 0's bg_free_blocks_count_lo (block 1)
    with Kernel(mb=32) as k:
        _expect(errno.EBADMSG, "group descriptor 0 checksum", mount, k, img)


def test_directory_block_checksum(tmp_path) -> None:
    loc = expected("basic")["meta"]["locations"]
    img = unpack("basic", tmp_path)
    _flip(img, loc["dir_block"] * loc["block_size"] + 30)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        _expect(errno.EBADMSG, f"directory block {loc['dir_block']}", readdir_names, k,
                root + "/dir")


def test_xattr_block_checksum(tmp_path) -> None:
    loc = expected("basic")["meta"]["locations"]
    img = unpack("basic", tmp_path)
    _flip(img, loc["xattr_block"] * loc["block_size"] + 40)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        _expect(errno.EBADMSG, f"xattr block {loc['xattr_block']}", k.sys.lgetxattr,
                root + "/onek", "user.big")


def test_extent_block_and_htree_node_checksums(tmp_path) -> None:
    loc = expected("largedir")["meta"]["locations"]
    img = unpack("largedir", tmp_path)
    bs = loc["block_size"]
    _flip(img, loc["extent_node"] * bs + 20)
    _flip(img, loc["htree_node"] * bs + 8 + 8 * 2 + 1)  # a hash in an interior node
    sample = expected("largedir")["big"]["huge"]["sample"]
    with Kernel(mb=32) as k:
        root = mount(k, img)
        fd = k.sys.open(root + "/deep-extents", kernel.O_RDONLY)
        _expect(errno.EBADMSG, f"extent block {loc['extent_node']}", k.sys.read, fd, 1 << 24)
        k.sys.close(fd)
        _expect(errno.EBADMSG, "htree", k.sys.lstat, f"{root}/huge/{sample[0]}")


def test_bitmap_checksums(tmp_path) -> None:
    img = unpack("basic", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        sb = k.sys._resolve(kernel.AT_FDCWD, root, True)[0].mnt.sb
        assert read_block_bitmap(sb, 0) and read_inode_bitmap(sb, 0)
        bb, ib = sb.groups[0][0], sb.groups[0][1]
    _flip(img, bb * 4096 + 3)
    _flip(img, ib * 4096 + 3)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        sb = k.sys._resolve(kernel.AT_FDCWD, root, True)[0].mnt.sb
        _expect(errno.EBADMSG, "block bitmap", read_block_bitmap, sb, 0)
        _expect(errno.EBADMSG, "inode bitmap", read_inode_bitmap, sb, 0)


def test_truncated_image(tmp_path) -> None:
    img = unpack("basic", tmp_path)
    with open(img, "r+b") as f:
        f.truncate(8 << 20)
    with Kernel(mb=32) as k:
        _expect(errno.EIO, "truncated", mount, k, img)


def test_not_a_filesystem(tmp_path) -> None:
    img = tmp_path / "zeros.img"
    img.write_bytes(bytes(1 << 20))
    with Kernel(mb=32) as k:
        disk = k.disk_add(img, readonly=True)
        _expect(errno.EINVAL, "", k.mount_dev, disk)
        _expect(errno.EINVAL, "magic", k.mount_dev, disk, None, "ext4")


@pytest.mark.slow
@pytest.mark.parametrize("name, span", [("ext2", 1 << 20), ("inline", 1 << 20), ("ext3", 1 << 20)])
def test_random_damage_gives_only_errnos(name: str, span: int, tmp_path) -> None:
    """Random bytes flipped in the metadata area: every failure is an OSError with an errno."""
    pristine = unpack(name, tmp_path).read_bytes()
    rnd = random.Random(name)
    for round_ in range(12):
        data = bytearray(pristine)
        for _ in range(60):
            off = rnd.randrange(1024, span)
            data[off] ^= 1 << rnd.randrange(8)
        img = tmp_path / f"{name}-{round_}.img"
        img.write_bytes(data)
        with Kernel(mb=8) as k:
            try:
                root = mount(k, img)
                kernel_manifest(k.sys, root)
            except OSError as e:
                assert e.errno in (errno.EUCLEAN, errno.EBADMSG, errno.EIO, errno.EINVAL,
                                   errno.EOPNOTSUPP, errno.ENOENT, errno.ENOTDIR, errno.ELOOP,
                                   errno.ENAMETOOLONG, errno.EACCES, errno.ENXIO), e
        img.unlink()
