"""Random sequences of write operations on our ext4 and on a host directory, compared after
every step; e2fsck -fn after every sequence. 1 KiB and 4 KiB blocks, 32-bit and 64bit.

HYPOTHESIS_EXAMPLES (default 12 per layout) and the step count scale it up for long runs.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from ext4util import host_fallocate
from helpers import need_tool
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from treeutil import diff_manifests, host_manifest, kernel_manifest, project

import kernel
from kernel import Kernel

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "12"))
STEPS = int(os.environ.get("HYPOTHESIS_STEPS", "60"))
LAYOUTS = {
    "4k-64bit": ["-t", "ext4", "-b", "4096"],
    "1k-32bit": ["-t", "ext4", "-b", "1024", "-O", "^64bit"],
    "1k-ext2": ["-t", "ext2", "-b", "1024"],
    "4k-nocsum": ["-t", "ext4", "-O", "^metadata_csum,uninit_bg,^64bit"],
}
FIELDS = ("type", "mode", "size", "sha256", "target", "nlink", "links", "xattrs")
NAMES = st.sampled_from(["a", "b", "c", "dd", "e" * 40, "f" * 200, "g.txt", "h h"])
SIZES = st.sampled_from([0, 1, 100, 1023, 1024, 1025, 4096, 5000, 70000, 300000])
OFFSETS = st.sampled_from([0, 1, 511, 1024, 4095, 4096, 65536, 1 << 20, 40 << 20])


class Ext4VsHost(RuleBasedStateMachine):
    layout = "4k-64bit"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(dir="/var/tmp"))
        self.img = self.tmp / "m.img"
        with open(self.img, "wb") as f:
            f.truncate(64 << 20)
        subprocess.run(["mke2fs", "-q", "-F", "-N", "256", *LAYOUTS[self.layout], str(self.img)],
                       check=True)
        self.host = self.tmp / "host"
        self.host.mkdir()
        self.k = Kernel(mb=16)
        self.root = self.k.mount_dev(self.k.disk_add(self.img, readonly=False))
        self.s = self.k.sys
        self.dirs = ["."]
        self.files: list[str] = []

    # -- helpers -------------------------------------------------------------------------------
    def both(self, kfn, hfn) -> None:
        """Run on both sides; they must fail or succeed alike, with the same errno."""
        kerr = herr = None
        try:
            kfn()
        except OSError as e:
            kerr = e.errno
        try:
            hfn()
        except OSError as e:
            herr = e.errno
        assert kerr == herr, (kerr, herr)

    def kp(self, rel: str) -> str:
        return self.root if rel == "." else f"{self.root}/{rel}"

    def hp(self, rel: str) -> Path:
        return self.host / rel

    def _forget(self, rel: str) -> None:
        self.files = [f for f in self.files if f != rel and not f.startswith(rel + "/")]
        self.dirs = [d for d in self.dirs if d != rel and not d.startswith(rel + "/")]

    # -- rules ------------------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        need_tool("mke2fs", "e2fsck")

    @rule(d=st.integers(0, 100), name=NAMES, size=SIZES, off=OFFSETS)
    def write(self, d: int, name: str, size: int, off: int) -> None:
        rel = os.path.join(self.dirs[d % len(self.dirs)], name).removeprefix("./")
        data = os.urandom(size)
        s = self.s

        def kw() -> None:
            fd = s.open(self.kp(rel), kernel.O_CREAT | kernel.O_WRONLY, 0o644)
            try:
                s.pwrite(fd, data, off)
            finally:
                s.close(fd)

        def hw() -> None:
            fd = os.open(self.hp(rel), os.O_CREAT | os.O_WRONLY, 0o644)
            try:
                os.pwrite(fd, data, off)
            finally:
                os.close(fd)

        self.both(kw, hw)
        if os.path.isfile(self.hp(rel)) and rel not in self.files:
            self.files.append(rel)

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 100), size=SIZES)
    def truncate(self, i: int, size: int) -> None:
        rel = self.files[i % len(self.files)]
        self.both(lambda: self.s.truncate(self.kp(rel), size), lambda: os.truncate(self.hp(rel), size))

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 100), mode=st.sampled_from([0, 1, 2, 3]), off=OFFSETS, ln=SIZES)
    def fallocate(self, i: int, mode: int, off: int, ln: int) -> None:
        rel = self.files[i % len(self.files)]
        flags = [0, kernel.FALLOC_FL_KEEP_SIZE,
                 kernel.FALLOC_FL_PUNCH_HOLE | kernel.FALLOC_FL_KEEP_SIZE,
                 kernel.FALLOC_FL_ZERO_RANGE][mode]
        if not ln:
            return
        if self.layout == "1k-ext2" and flags != kernel.FALLOC_FL_PUNCH_HOLE | kernel.FALLOC_FL_KEEP_SIZE:
            return  # ext2 files have no unwritten extents (EOPNOTSUPP on both sides)

        def kf() -> None:
            fd = self.s.open(self.kp(rel), kernel.O_WRONLY)
            try:
                self.s.fallocate(fd, flags, off, ln)
            finally:
                self.s.close(fd)

        def hf() -> None:
            fd = os.open(self.hp(rel), os.O_WRONLY)
            try:
                host_fallocate(fd, flags, off, ln)
            finally:
                os.close(fd)

        self.both(kf, hf)

    @rule(d=st.integers(0, 100), name=NAMES)
    def mkdir(self, d: int, name: str) -> None:
        rel = os.path.join(self.dirs[d % len(self.dirs)], name).removeprefix("./")
        self.both(lambda: self.s.mkdir(self.kp(rel), 0o755), lambda: os.mkdir(self.hp(rel), 0o755))
        if os.path.isdir(self.hp(rel)) and not os.path.islink(self.hp(rel)) and rel not in self.dirs:
            self.dirs.append(rel)

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 100))
    def unlink(self, i: int) -> None:
        rel = self.files[i % len(self.files)]
        self.both(lambda: self.s.unlink(self.kp(rel)), lambda: os.unlink(self.hp(rel)))
        if not os.path.lexists(self.hp(rel)):
            self._forget(rel)

    @precondition(lambda self: len(self.dirs) > 1)
    @rule(i=st.integers(0, 100))
    def rmdir(self, i: int) -> None:
        rel = self.dirs[1 + i % (len(self.dirs) - 1)]
        self.both(lambda: self.s.rmdir(self.kp(rel)), lambda: os.rmdir(self.hp(rel)))
        if not os.path.lexists(self.hp(rel)):
            self._forget(rel)

    @precondition(lambda self: self.files or len(self.dirs) > 1)
    @rule(i=st.integers(0, 1000), d=st.integers(0, 100), name=NAMES)
    def rename(self, i: int, d: int, name: str) -> None:
        pool = self.files + self.dirs[1:]
        src = pool[i % len(pool)]
        dst = os.path.join(self.dirs[d % len(self.dirs)], name).removeprefix("./")
        self.both(lambda: self.s.rename(self.kp(src), self.kp(dst)),
                  lambda: os.rename(self.hp(src), self.hp(dst)))
        # rebuild the path lists from the host (the reference)
        self.files, self.dirs = [], ["."]
        for dirpath, dirnames, filenames in os.walk(self.host):
            rel = os.path.relpath(dirpath, self.host)
            for n in dirnames:
                self.dirs.append(os.path.join(rel, n).removeprefix("./"))
            for n in filenames:
                p = os.path.join(rel, n).removeprefix("./")
                if os.path.isfile(self.hp(p)) and not os.path.islink(self.hp(p)):
                    self.files.append(p)

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 100), d=st.integers(0, 100), name=NAMES)
    def link(self, i: int, d: int, name: str) -> None:
        src = self.files[i % len(self.files)]
        dst = os.path.join(self.dirs[d % len(self.dirs)], name).removeprefix("./")
        self.both(lambda: self.s.link(self.kp(src), self.kp(dst)),
                  lambda: os.link(self.hp(src), self.hp(dst)))
        if os.path.isfile(self.hp(dst)) and dst not in self.files:
            self.files.append(dst)

    @rule(d=st.integers(0, 100), name=NAMES,
          dest=st.sampled_from(["x", "../y", "z" * 100, "w" * 500]))
    def symlink(self, d: int, name: str, dest: str) -> None:
        rel = os.path.join(self.dirs[d % len(self.dirs)], name).removeprefix("./")
        self.both(lambda: self.s.symlink(dest.encode(), self.kp(rel)),
                  lambda: os.symlink(dest, self.hp(rel)))

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 100), mode=st.sampled_from([0o600, 0o755, 0o4755, 0o1777, 0o2644]))
    def chmod(self, i: int, mode: int) -> None:
        rel = self.files[i % len(self.files)]
        self.both(lambda: self.s.chmod(self.kp(rel), mode), lambda: os.chmod(self.hp(rel), mode))

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 100), name=st.sampled_from([b"user.a", b"user.bb", b"trusted.c"]),
          size=st.sampled_from([0, 1, 30, 200, 700]), remove=st.booleans())
    def xattr(self, i: int, name: bytes, size: int, remove: bool) -> None:
        rel = self.files[i % len(self.files)]
        if remove:
            self.both(lambda: self.s.removexattr(self.kp(rel), name),
                      lambda: os.removexattr(self.hp(rel), name))
            return
        value = os.urandom(size)
        kerr = herr = None
        try:
            self.s.setxattr(self.kp(rel), name, value, 0)
        except OSError as e:
            kerr = e.errno
        if kerr == errno.ENOSPC:
            return  # a 1 KiB block holds fewer attributes than the host's filesystem
        try:
            os.setxattr(self.hp(rel), name, value)
        except OSError as e:
            herr = e.errno
        # any other failure is the host's too (a name left dangling by a renamed symlink)
        assert kerr == herr, (kerr, herr)

    @invariant()
    def same_tree(self) -> None:
        got = kernel_manifest(self.s, self.root)
        got.pop("lost+found", None)
        got["."]["nlink"] -= 1
        want = host_manifest(self.host)
        for m in (got, want):
            for e in m.values():
                e["xattrs"] = {k: v for k, v in e["xattrs"].items() if not k.startswith("security.")}
        assert diff_manifests(project(got, FIELDS, skip_root_mtime=True),
                              project(want, FIELDS, skip_root_mtime=True)) == []

    def teardown(self) -> None:
        try:
            self.k.halt()
            proc = subprocess.run(["e2fsck", "-fn", str(self.img)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stdout
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_random_operations_match_the_host(layout: str) -> None:
    cls = type(f"Ext4VsHost_{layout}", (Ext4VsHost,), {"layout": layout})
    cls.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS,
                                     deadline=None,
                                     suppress_health_check=list(HealthCheck))
    cls.TestCase().runTest()
