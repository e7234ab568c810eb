"""The btrfs driver against images made by mkfs.btrfs and the host kernel (make_btrfs.py):
the whole tree equals the host's view, subvolumes, mount options, readdir cookies, every
checksum type, and damaged images failing cleanly."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from helpers import IMAGES, unpack_image
from treeutil import diff_manifests, kernel_manifest, project

import kernel
from kernel import Kernel
from kernel.lib.crc import crc32c

FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "mtime_ns", "target", "rdev", "xattrs",
          "links", "nlink")
NAMES = ["basic", "features", "xxhash", "sha256", "blake2", "node64k", "mixed", "deep"]


def expected(name: str) -> dict:
    return json.loads((IMAGES / f"btrfs-{name}.json").read_text())


def mount(k: Kernel, img: Path, options: str = "") -> str:
    return k.mount_dev(k.disk_add(img, readonly=True), fstype="btrfs", flags=kernel.MS_RDONLY,
                       options=options)


def _sb(k: Kernel, path: str):
    res, _ = k.sys._resolve(kernel.AT_FDCWD, path, True)
    return res.mnt.sb


@pytest.mark.parametrize("name", NAMES)
def test_tree_equals_the_host_view(tmp_path: Path, name: str) -> None:
    """Types, modes, owners, sizes, contents (compressed with zlib, lzo and zstd, inline and
    regular, reflinked, preallocated, sparse), ns mtimes, symlinks, devices, xattrs and ACLs,
    hard links and link counts, as Linux shows them; the image is not changed."""
    exp = expected(name)
    img = unpack_image(f"btrfs-{name}.img", tmp_path)
    with Kernel(mb=32) as k:
        root = k.mount_dev(k.disk_add(img, readonly=True))  # detected
        assert k.sys.statfs(root).f_type == 0x9123683E
        got = kernel_manifest(k.sys, root)
    assert diff_manifests(project(got, FIELDS), project(exp["tree"], FIELDS)) == []
    assert hashlib.sha256(img.read_bytes()).hexdigest() == exp["meta"]["image_sha256"]


def test_subvolumes_have_their_own_device_and_mount_options(tmp_path: Path) -> None:
    exp = expected("features")
    img = unpack_image("btrfs-features.img", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        root_dev = k.sys.stat(root).st_dev
        others = sorted(p for p in ("subvol", "snap", "subvol/dir", "zlib")
                        if k.sys.stat(f"{root}/{p}").st_dev != root_dev)
        assert others == sorted(p for p in exp["meta"]["other_dev"]
                                if p in ("subvol", "snap", "subvol/dir", "zlib"))
        assert k.sys.stat(f"{root}/subvol").st_ino == 256
        assert k.sys.stat(f"{root}/subvol").st_dev != k.sys.stat(f"{root}/snap").st_dev
        names = sorted(e.d_name for e in k.sys.getdents64(
            k.sys.open(f"{root}/snap", kernel.O_RDONLY | kernel.O_DIRECTORY), 65536))
        assert b"after-snapshot" not in names and b"inside" in names
        sid = _sb(k, root)._subvols
        subvol_id = next(i for i, sv in sid.items() if sv.dev == k.sys.stat(f"{root}/subvol").st_dev)
    for options in ("subvol=subvol", "subvol=/subvol", f"subvolid={subvol_id}"):
        with Kernel(mb=32) as k:
            root = mount(k, img, options)
            assert k.sys.lstat(f"{root}/inside").st_size == len("in a subvolume\n")
            assert k.sys.lstat(f"{root}/after-snapshot").st_size > 0
    with Kernel(mb=32) as k:
        disk = k.disk_add(img, readonly=True)
        for bad, code in (("subvol=nope", errno.ENOENT), ("subvolid=9999", errno.ENOENT),
                          ("frobnicate", errno.EINVAL)):
            with pytest.raises(OSError) as e:
                k.mount_dev(disk, fstype="btrfs", flags=kernel.MS_RDONLY, options=bad)
            assert e.value.errno == code, bad


def test_readdir_cookies_resume(tmp_path: Path) -> None:
    """600 entries read a few at a time, each batch resuming at the last d_off."""
    img = unpack_image("btrfs-features.img", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        fd = k.sys.open(f"{root}/many", kernel.O_RDONLY | kernel.O_DIRECTORY)
        names = []
        while batch := k.sys.getdents64(fd, 200):
            names += [d.d_name for d in batch]
            k.sys.lseek(fd, batch[-1].d_off, 0)
        assert names[:2] == [b".", b".."]
        assert sorted(names[2:]) == sorted(f"file-{i:04d}".encode() for i in range(600))
        assert len(set(names)) == len(names)
        assert k.sys.lstat(f"{root}/many/file-0599").st_size == 3
        with pytest.raises(OSError) as e:
            k.sys.lstat(f"{root}/many/file-0600")
        assert e.value.errno == errno.ENOENT


def test_read_write_mount_refused(tmp_path: Path) -> None:
    img = unpack_image("btrfs-basic.img", tmp_path)
    with Kernel(mb=32) as k:
        disk = k.disk_add(img, readonly=False)
        with pytest.raises(OSError) as e:
            k.mount_dev(disk, fstype="btrfs")
        assert e.value.errno == errno.EROFS and "btrfs" in str(e.value)


# -- damage ----------------------------------------------------------------------------------
def _physical(img: Path, logical: int) -> list[int]:
    with Kernel(mb=32) as k:
        root = mount(k, img)
        return _sb(k, root).fs.map(logical, 4096)


def _tree_root(img: Path) -> int:
    raw = img.read_bytes()[0x10000:0x10000 + 4096]
    return struct.unpack_from("<Q", raw, 0x50)[0]


def _fs_tree_root(img: Path) -> int:
    with Kernel(mb=32) as k:
        root = mount(k, img)
        return _sb(k, root).subvol(5).tree.root


def _flip(img: Path, offset: int) -> None:
    with open(img, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_flipped_tree_block_byte(tmp_path: Path) -> None:
    """A damaged tree block of a single-metadata image: EBADMSG naming the block."""
    img = unpack_image("btrfs-basic.img", tmp_path)
    shutil.copy(img, tmp_path / "ok.img")
    logical = _fs_tree_root(img)
    for p in _physical(img, logical):
        _flip(img, p + 200)
    with Kernel(mb=32) as k:
        with pytest.raises(OSError) as e:
            root = mount(k, img)
            kernel_manifest(k.sys, root)
        assert e.value.errno in (errno.EBADMSG, errno.EUCLEAN)
        assert str(logical) in str(e.value)


def test_dup_metadata_uses_the_good_copy(tmp_path: Path) -> None:
    """With DUP metadata a damaged first copy is read from the second."""
    exp = expected("xxhash")
    img = unpack_image("btrfs-xxhash.img", tmp_path)
    logical = _fs_tree_root(img)
    copies = _physical(img, logical)
    assert len(copies) == 2
    _flip(img, copies[0] + 300)
    with Kernel(mb=32) as k:
        got = kernel_manifest(k.sys, mount(k, img))
    assert diff_manifests(project(got, FIELDS), project(exp["tree"], FIELDS)) == []


def test_flipped_data_byte_is_eio(tmp_path: Path) -> None:
    """A damaged data sector fails its checksum: EIO naming the logical address."""
    img = unpack_image("btrfs-basic.img", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        ino = _sb(k, root)._load(_sb(k, root).subvol(5), k.sys.lstat(f"{root}/big.bin").st_ino)
        ext = ino._file_extents()[0]
        disk = int.from_bytes(ext[3][21:29], "little")
        phys = _sb(k, root).fs.map(disk, 4096)[0]
    _flip(img, phys + 10)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        fd = k.sys.open(f"{root}/big.bin", kernel.O_RDONLY)
        with pytest.raises(OSError) as e:
            k.sys.read(fd, 1 << 20)
        assert e.value.errno == errno.EIO and "checksum" in str(e.value)
        assert k.sys.lstat(f"{root}/small.txt").st_size == 12  # the rest still reads


@pytest.mark.parametrize("name", ["basic", "features"])
def test_stat_blocks_match_the_host(tmp_path: Path, name: str) -> None:
    """st_blocks as Linux reports it: the bytes in use rounded up to whole sectors (inline
    and compressed files included)."""
    import os

    from helpers import LoopMount

    img = unpack_image(f"btrfs-{name}.img", tmp_path)
    host = {}
    with LoopMount(img, tmp_path / "m") as mnt:
        for dirpath, dirnames, filenames in os.walk(mnt):
            for n in filenames + dirnames:
                p = os.path.join(dirpath, n)
                host[os.path.relpath(p, mnt)] = os.lstat(p).st_blocks
    assert len(host) > 10
    with Kernel(mb=32) as k:
        root = mount(k, img)
        ours = {p: k.sys.lstat(f"{root}/{p}").st_blocks for p in host}
    assert ours == host


def test_data_checksums_are_checked_per_sector(tmp_path: Path) -> None:
    """Only the sectors a read covers are checked, against their own sums (one checksum
    item holds the sums of a long run of sectors)."""
    img = unpack_image("btrfs-basic.img", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        sb = _sb(k, root)
        ino = sb._load(sb.subvol(5), k.sys.lstat(f"{root}/big.bin").st_ino)
        ext = ino._file_extents()[0]
        disk = int.from_bytes(ext[3][21:29], "little")
        assert ext[0] == 0 and ext[1] > 4 * 4096  # a regular extent of several sectors
        phys = sb.fs.map(disk, 4096)[0]
        fd = k.sys.open(f"{root}/big.bin", kernel.O_RDONLY)
        good = k.sys.pread64(fd, 4 * 4096, 0)
    _flip(img, phys + 2 * 4096 + 100)  # the third sector
    with Kernel(mb=32) as k:
        root = mount(k, img)
        fd = k.sys.open(f"{root}/big.bin", kernel.O_RDONLY)
        assert k.sys.pread64(fd, 2 * 4096, 0) == good[:2 * 4096]
        assert k.sys.pread64(fd, 4096, 3 * 4096) == good[3 * 4096:]
        with pytest.raises(OSError) as e:
            k.sys.pread64(fd, 100, 2 * 4096 + 50)
        assert e.value.errno == errno.EIO and "checksum" in str(e.value)
        with pytest.raises(OSError) as e:  # a read of all four names the bad one
            k.sys.pread64(fd, 4 * 4096, 0)
        assert f"at logical {disk + 2 * 4096}" in str(e.value)


def test_bad_superblocks_and_truncation(tmp_path: Path) -> None:
    img = unpack_image("btrfs-basic.img", tmp_path)
    good = img.read_bytes()
    cases = {}
    bad_csum = bytearray(good)
    bad_csum[0x10000 + 0x100] ^= 1
    # the mirror at 64 MiB still serves (the valid copy with the highest generation)
    p = tmp_path / "primary.img"
    p.write_bytes(bad_csum)
    with Kernel(mb=32) as k:
        assert k.sys.lstat(mount(k, p) + "/small.txt").st_size == 12
    bad_csum[0x4000000 + 0x100] ^= 1
    cases["checksum"] = (bytes(bad_csum), (errno.EBADMSG, errno.EUCLEAN))
    cases["truncated"] = (good[:40 << 20], (errno.EIO, errno.EUCLEAN))
    log = bytearray(good)
    struct.pack_into("<Q", log, 0x10000 + 0x60, 12345)  # a log tree to replay
    struct.pack_into("<I", log, 0x10000, crc32c(bytes(log[0x10020:0x11000])))
    cases["log"] = (bytes(log), (errno.EOPNOTSUPP,))
    for what, (data, codes) in cases.items():
        p = tmp_path / f"{what}.img"
        p.write_bytes(data)
        with Kernel(mb=32) as k:
            with pytest.raises(OSError) as e:
                root = mount(k, p)
                kernel_manifest(k.sys, root)
            assert e.value.errno in codes, (what, e.value)


def test_inode_read_with_its_items(tmp_path) -> None:
    """An inode's xattrs and a file's first extents come with its inode item (one walk of
    the tree); a file with more extents than that reads them when wanted. Both read back
    what the host kernel wrote, and a directory's entries are not taken for a file's."""
    import random

    from helpers import LoopMount, run

    import kernel.fs.btrfs.inode as btrfs_inode

    image = tmp_path / "frag.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    run("mkfs.btrfs", "-q", "-f", image)
    rnd = random.Random(3)
    want: dict[str, bytes] = {}
    with LoopMount(image, tmp_path / "mnt", options="rw") as mnt:
        for name, pieces in (("few", 3), ("many", btrfs_inode.PREFETCH_EXTENTS + 8)):
            p = mnt / name
            with open(p, "wb") as f:
                for i in range(pieces):  # a hole between pieces: one extent each
                    f.seek(i * 65536)
                    f.write(rnd.randbytes(4096 + i))
                    f.flush()
                    os.fsync(f.fileno())
            os.setxattr(p, "user.n", name.encode())
            want[name] = p.read_bytes()
        (mnt / "d").mkdir()
        os.setxattr(mnt / "d", "user.n", b"d")
        for i in range(50):
            (mnt / "d" / f"e{i}").write_bytes(b"x")
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True))
        for name, data in want.items():
            fd = k.sys.open(f"{root}/{name}", kernel.O_RDONLY)
            inode = k.sys._task.files.get(fd).inode
            assert k.sys.flistxattr(fd) == [b"user.n"]
            assert k.sys.fgetxattr(fd, b"user.n") == name.encode()
            assert k.sys.pread(fd, len(data) + 10, 0) == data
            assert (inode._first.extents is None) == (name == "many")
            k.sys.close(fd)
        assert k.sys.getxattr(f"{root}/d", b"user.n") == b"d"
        dfd = k.sys.open(f"{root}/d", kernel.O_RDONLY | kernel.O_DIRECTORY)
        names = []
        while batch := k.sys.getdents64(dfd):
            names += [os.fsdecode(e.d_name) for e in batch if e.d_name not in (b".", b"..")]
        assert sorted(names) == sorted(f"e{i}" for i in range(50))


def test_searches_from_the_finger_equal_searches_from_the_root(tmp_path: Path) -> None:
    """A tree of three levels (btrfs-deep: 4 KiB nodes, 3,000 files): every search through
    one Tree, which starts from the path of the search before it, finds what a search from
    the root finds, for keys in order, at random, between and outside the items."""
    import random
    from itertools import islice

    from kernel.fs.btrfs.ctree import Tree

    image = unpack_image("btrfs-deep.img", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, image)
        sb = _sb(k, root)
        tree = sb.subvol(5).tree
        assert tree.level >= 2

        def fresh() -> Tree:
            return Tree(tree.fs, tree.root, tree.level, tree.name)

        keys = [key for key, _ in fresh().items((0, 0, 0))]
        rnd = random.Random(7)
        probes = keys[::7] + rnd.sample(keys, 400) + [(oid, typ, off + 1) for oid, typ, off in
                                                     rnd.sample(keys, 200)]
        probes += [(0, 0, 0), (2**64 - 1, 255, 2**64 - 1)]
        for key in probes:
            want = [(k_, bytes(v)) for k_, v in islice(fresh().items(key), 5)]
            got = [(k_, bytes(v)) for k_, v in islice(tree.items(key), 5)]
            assert got == want, key
            f, t = fresh().floor(key), tree.floor(key)
            assert (f and (f[0], bytes(f[1]))) == (t and (t[0], bytes(t[1]))), key
            f2, t2 = fresh().get(key), tree.get(key)
            assert (f2 and bytes(f2)) == (t2 and bytes(t2)), key


def test_internal_node_without_children_is_euclean(tmp_path: Path) -> None:
    """An internal tree block claiming no children (checksum made to match) is refused
    naming the block, not followed into an empty pointer array."""
    image = unpack_image("btrfs-deep.img", tmp_path)
    logical = _fs_tree_root(image)
    for p in _physical(image, logical):
        with open(image, "r+b") as f:
            f.seek(p)
            block = bytearray(f.read(4096))
            assert block[0x64] >= 1  # the root's level: an internal node
            struct.pack_into("<I", block, 0x60, 0)  # nritems
            struct.pack_into("<I", block, 0, crc32c(bytes(block[32:])))
            f.seek(p)
            f.write(block)
    with Kernel(mb=32) as k:
        with pytest.raises(OSError) as e:
            root = mount(k, image)
            kernel_manifest(k.sys, root)
        assert e.value.errno == errno.EUCLEAN
        assert str(logical) in str(e.value)
