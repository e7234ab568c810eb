"""Log recovery: an image shut down with committed transactions only in its log."""

from __future__ import annotations

import hashlib

import pytest
import treeutil
from helpers import IMAGES, need_tool, run

import kernel
from kernel import Kernel


def _sha(p) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def test_log_is_dirty_per_xfs_logprint(xfs_image) -> None:
    """The reference tool agrees that the image needs recovery."""
    need_tool("xfs_logprint")
    out = run("xfs_logprint", "-t", xfs_image("xfs-dirty")).stdout
    assert "UNMOUNT" not in out.strip().splitlines()[-1]
    assert "INODE" in out and "BUF" in out


def test_replayed_tree_matches_pre_shutdown_view(xfs_image) -> None:
    """After replay in memory the tree is what the host kernel showed before the shutdown,
    and the image file is untouched."""
    img = xfs_image("xfs-dirty")
    before = _sha(img)
    expected = treeutil.load(IMAGES / "xfs-dirty.json")
    with Kernel(mb=32) as k:
        disk = k.disk_add(img, readonly=True)
        root = k.mount_dev(disk, flags=kernel.MS_RDONLY)
        got = treeutil.kernel_manifest(k.sys, root)
        log = "\n".join(k.dmesg.records)
    assert treeutil.diff_manifests(treeutil.project(expected), treeutil.project(got)) == []
    assert "log recovered in memory" in log and "icreates" in log and "cancelled" in log
    assert _sha(img) == before


def test_norecovery_shows_the_stale_metadata(xfs_image) -> None:
    """Without replay the changes made after the last clean unmount are missing, which is
    what a reader that ignores the log would show."""
    expected = treeutil.load(IMAGES / "xfs-dirty.json")
    with Kernel(mb=32) as k:
        disk = k.disk_add(xfs_image("xfs-dirty"), readonly=True)
        root = k.mount_dev(disk, flags=kernel.MS_RDONLY, options="norecovery")
        assert "after" in expected and "doomed" not in expected
        with pytest.raises(FileNotFoundError):
            k.sys.lstat(root + "/after")
        assert k.sys.lstat(root + "/doomed").st_nlink >= 2


def test_xfs_db_sees_the_stale_tree_too(xfs_image) -> None:
    """xfs_db does not replay the log: its root listing lacks what we recover."""
    need_tool("xfs_db")
    img = xfs_image("xfs-dirty")
    rootino = run("xfs_db", "-r", "-c", "sb 0", "-c", "print rootino", img).stdout.split()[-1]
    out = run("xfs_db", "-r", "-c", f"inode {rootino}", "-c", "ls", img).stdout
    assert " doomed" in out and " after" not in out
