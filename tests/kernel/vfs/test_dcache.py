"""The dentry cache stays bounded on big trees and stays correct while it shrinks."""

from __future__ import annotations

import os

import pytest

from kernel import Kernel
from kernel.vfs import dcache


@pytest.fixture
def small_dcache(monkeypatch):
    monkeypatch.setattr(dcache, "DCACHE_LIMIT", 500)
    dcache._lru.clear()


def _count(d) -> int:
    return sum(1 + _count(c) for c in (d.children or {}).values())


def test_walking_many_files_keeps_the_cache_bounded(small_dcache) -> None:
    with Kernel(mb=4) as k:
        s = k.sys
        for i in range(20):
            s.mkdir(f"/d{i}", 0o755)
            for j in range(100):
                s.close(s.open(f"/d{i}/f{j}", os.O_CREAT | os.O_WRONLY, 0o644))
        held = s.open("/d0/f0", os.O_RDONLY)
        s.chdir("/d3")
        for i in range(20):
            for j in range(100):
                assert s.stat(f"/d{i}/f{j}").st_size == 0
        root = k.root_mount.root
        assert _count(root) <= dcache.DCACHE_LIMIT + 100
        # pruned names are looked up again, right
        assert s.stat("/d0/f0").st_ino == s.fstat(held).st_ino
        assert s.getcwd() == b"/d3"
        s.rename("/d3/f5", "/d3/g5")
        with pytest.raises(FileNotFoundError):
            s.stat("f5")
        assert s.stat("g5").st_size == 0
        s.close(held)
