"""Journal replay on read-only mounts: into memory, never onto the image."""

from __future__ import annotations

import errno
import hashlib

import pytest
from ext4util import expected, make_ext4, mount, unpack
from treeutil import diff_manifests, kernel_manifest, project

import kernel
from kernel import Kernel


def _sb(k: Kernel, path: str):
    res, _ = k.sys._resolve(kernel.AT_FDCWD, path, True)
    return res.mnt.sb


def test_ext3_replay_32bit_tags_and_escaped_blocks(tmp_path) -> None:
    exp = expected("ext3")
    img = unpack("ext3", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        info = _sb(k, root).recovery
        assert info is not None and info.transactions >= 1 and info.replayed > 0
        assert info.escaped >= 1  # a data=journal block that began with the jbd2 magic
        fd = k.sys.open(root + "/escaped", kernel.O_RDONLY)
        data = k.sys.read(fd, 1 << 20)
        k.sys.close(fd)
        assert data[:4] == bytes.fromhex("c03b3998")
        assert hashlib.sha256(data).hexdigest() == exp["tree"]["escaped"]["sha256"]
    assert hashlib.sha256(img.read_bytes()).hexdigest() == exp["meta"]["image_sha256"]


def test_dirty_ext4_revokes_and_checksums(tmp_path) -> None:
    exp = expected("dirty")
    assert exp["meta"]["logdump"]["revoke_blocks"] >= 1
    img = unpack("dirty", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img)
        sb = _sb(k, root)
        info = sb.recovery
        assert info.revoke_records > 0 and info.revoked > 0 and info.bad_tag_csums == 0
        m = kernel_manifest(k.sys, root)
        assert diff_manifests(project(m), project(exp["tree"])) == []


def test_noload_skips_replay(tmp_path) -> None:
    """With noload the journal is ignored: the tree is the stale, pre-crash one."""
    exp = expected("ext3")
    img = unpack("ext3", tmp_path)
    with Kernel(mb=32) as k:
        root = mount(k, img, options="noload")
        assert _sb(k, root).recovery is None
        got, _big = make_ext4.summarize(kernel_manifest(k.sys, root), list(exp["big"]))
        assert diff_manifests(project(got), project(exp["tree"])) != []


def test_bad_mount_option(tmp_path) -> None:
    img = unpack("ext2", tmp_path)
    with Kernel(mb=32) as k:
        disk = k.disk_add(img, readonly=True)
        with pytest.raises(OSError) as e:
            k.mount_dev(disk, options="frobnicate")
        assert e.value.errno == errno.EINVAL
