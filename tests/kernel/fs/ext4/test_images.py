"""Each image's whole tree through kernel.sys equals what the host kernel shows.

The expected trees (ext4-*.json) were read by make_ext4.py from read-only
host loop mounts of the images (for dirty journals: of a copy the host
kernel recovered). Huge directories are compared by count, digests of
their names and of the host's readdir order (the htree hash order), and
their entries' attributes.
"""

from __future__ import annotations

import hashlib

import pytest
from ext4util import expected, make_ext4, mount, readdir_names, unpack
from treeutil import diff_manifests, project

import kernel
from kernel import Kernel

FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "mtime_ns", "target", "rdev", "xattrs",
          "links", "nlink")
IMAGES = ["basic", "ext2", "ext3", "dirty", "inline", "bigalloc", "features"]
# after recovery, the host kernel also cleaned up the orphan inodes these hold
ORPHANS = {"ext3", "dirty"}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "basic" else n
                                  for n in IMAGES])
def test_tree_matches_host(name: str, tmp_path) -> None:
    exp = expected(name)
    img = unpack(name, tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        m = make_ext4.summarize(_manifest(k, root), list(exp["big"]))
        got, big = m
        assert diff_manifests(project(got, FIELDS), project(exp["tree"], FIELDS)) == []
        for d, summary in exp["big"].items():
            for key in ("count", "names_sha256", "records"):
                assert big[d][key] == summary[key], (d, key)
            names = [n.decode() for n, _ino, _off in readdir_names(k, f"{root}/{d}")]
            order = hashlib.sha256("\n".join(names).encode()).hexdigest()
            assert order == summary["order_sha256"], f"{d}: readdir order differs from Linux's"
        st = k.sys.statfs(root)
        want = exp["meta"]["statfs"]
        fields = ("f_bsize", "f_blocks", "f_files") if name in ORPHANS else tuple(want)
        assert {f: getattr(st, f) for f in fields} == {f: want[f] for f in fields}
    # the image was never written, not even to replay its journal
    assert _sha(img) == exp["meta"]["image_sha256"]


def _manifest(k: Kernel, root: str) -> dict:
    from treeutil import kernel_manifest

    return kernel_manifest(k.sys, root)


def test_64k_blocks_match_the_source_tree(tmp_path) -> None:
    """64 KiB blocks: the host kernel cannot mount them; mkfs -d's source is the reference."""
    exp = expected("bs64k")
    img = unpack("bs64k", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        got = _manifest(k, root)
        assert k.sys.statfs(root).f_bsize == 65536
    got.pop(".")
    got.pop("lost+found")
    assert diff_manifests(project(got, FIELDS[:-1]), project(exp["tree"], FIELDS[:-1])) == []


def test_crtime_and_nanoseconds(tmp_path) -> None:
    """statx birth time comes from i_crtime; ns and post-2038 mtimes survive."""
    exp = expected("basic")["tree"]
    img = unpack("basic", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        st = k.sys.lstat(root + "/frag-a")  # set through the host kernel to 2100
        assert st.st_mtime_ns == exp["frag-a"]["mtime_ns"] > 2**31 * 10**9  # needs epoch bits
        assert st.st_mtime_ns % 10**9 != 0
        assert st.st_birthtime_ns is not None and st.stx_mask & kernel.STATX_BTIME
        assert k.sys.lstat(root + "/empty").st_mtime_ns == exp["empty"]["mtime_ns"] < 0


def test_ext2_has_no_birth_time_and_whole_seconds(tmp_path) -> None:
    img = unpack("ext2", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        st = k.sys.lstat(root + "/small.txt")
        assert st.st_birthtime_ns is None
        assert st.st_mtime_ns % 10**9 == 0
        assert k.fstype_of(root) == "ext2"


def test_fstype_names(tmp_path) -> None:
    for name, fstype in (("ext3", "ext3"), ("basic", "ext4")):
        img = unpack(name, tmp_path)
        with Kernel(mb=32) as k:
            assert k.fstype_of(mount(k, img)) == fstype
