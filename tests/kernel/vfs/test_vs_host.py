"""The syscall API against the host kernel: same call sequences, same results and errnos.

A hypothesis state machine runs random operations (with awkward paths: '..',
'.', trailing slashes, symlinks, overlong names) in a host temporary
directory and in the library kernel, compares every result or errno, which
entries each call changed the mtime of, and the whole tree after each step.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)
from syscall_model import HostFS, KernelFS

from kernel import Kernel
from kernel import uapi as u

NAMES = [b"a", b"b", b"c"]
component = st.sampled_from(NAMES + [b"..", b"."]) | st.just(b"x" * 256)
weird_paths = st.builds(
    lambda comps, tail: b"/".join(comps) + tail,
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)
    | st.lists(component, min_size=1, max_size=3),
    st.sampled_from([b"", b"", b"", b"/", b"/."]),
)
simple_paths = st.sampled_from([b"a", b"b", b"c", b"a/b", b"a/c", b"b/a", b"b/c", b"a/b/c"])
# mostly plain names, so that operations succeed often and build up state
paths = st.one_of(simple_paths, simple_paths, simple_paths, weird_paths)
modes = st.sampled_from([0o755, 0o644, 0o700, 0o000, 0o1777, 0o2755, 0o4755, 0o600])
data = st.binary(max_size=64)
xnames = st.sampled_from([b"user.a", b"user.b", b"trusted.t", b"user." + b"n" * 250, b"bad.ns"])
timespecs = st.one_of(
    st.none(),
    st.tuples(st.tuples(st.integers(0, 2**33), st.sampled_from([0, 5, 999_999_999, u.UTIME_OMIT,
                                                               u.UTIME_NOW])),
              st.tuples(st.integers(0, 2**33), st.sampled_from([1, u.UTIME_OMIT, u.UTIME_NOW]))),
)


made = Bundle("made")  # paths something was created at (it may be gone since)
any_path = st.one_of(made, made, paths)  # an existing-ish path most of the time


class VsHost(RuleBasedStateMachine):

    def __init__(self) -> None:
        super().__init__()
        self.cwd = os.getcwd()
        self.tmp = tempfile.mkdtemp(prefix="vs-host-")
        os.chmod(self.tmp, 0o755)
        os.chown(self.tmp, 0, 0)
        # the work directories sit deep enough that '..' in generated paths and
        # symlinks never climbs out of the identical part of both trees
        deep = "/".join(f"l{i}" for i in range(8)) + "/work"
        os.makedirs(os.path.join(self.tmp, deep), 0o755)
        self.host = HostFS(os.path.join(self.tmp, deep))
        self.k = Kernel(mb=4)
        self.k.sysctl["fs.protected_hardlinks"] = int(open("/proc/sys/fs/protected_hardlinks").read())
        path = ""
        for comp in deep.split("/"):
            path += "/" + comp
            self.k.sys.mkdir(path, 0o755)
        self.ours = KernelFS(self.k.sys, "/" + deep)

    def teardown(self) -> None:
        os.chdir(self.cwd)
        self.k.halt()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def same(self, op: str, *args: object) -> None:
        self.host.reset_mtimes()
        self.ours.reset_mtimes()
        h = self.host.call(op, *args)
        o = self.ours.call(op, *args)
        assert o == h, f"{op}{args}: ours {o!r}, host {h!r}"
        hm, om = self.host.mtimes(), self.ours.mtimes()
        changed_h = sorted(p for p, t in hm.items() if t != 1000 * 10**9)
        changed_o = sorted(p for p, t in om.items() if t != 1000 * 10**9)
        assert changed_o == changed_h, f"{op}{args}: mtime changed on {changed_o}, host {changed_h}"
        so, sh = self.ours.snapshot(), self.host.snapshot()
        assert so == sh, f"after {op}{args}:\nours {so}\nhost {sh}"

    @initialize()
    def start(self) -> None:
        self.same("mkdir", b"a", 0o755)

    @rule(target=made, p=paths, mode=modes)
    def mkdir(self, p: bytes, mode: int) -> bytes:
        self.same("mkdir", p, mode)
        return p

    @rule(p=any_path)
    def rmdir(self, p: bytes) -> None:
        self.same("rmdir", p)

    @rule(p=any_path)
    def unlink(self, p: bytes) -> None:
        self.same("unlink", p)

    @rule(a=any_path, b=paths, flags=st.sampled_from([0, 0, u.RENAME_NOREPLACE, u.RENAME_EXCHANGE]))
    def rename(self, a: bytes, b: bytes, flags: int) -> None:
        self.same("rename", a, b, flags)

    @rule(a=any_path, b=paths)
    def link(self, a: bytes, b: bytes) -> None:
        self.same("link", a, b)

    @rule(target=made, p=paths, tgt=st.sampled_from(
        [b"a", b"../a", b"b/c", b"/no-such-dir-vs-host/x", b"c", b".", b"a/"]))
    def symlink(self, tgt: bytes, p: bytes) -> bytes:
        self.same("symlink", tgt, p)
        return p

    @rule(p=any_path)
    def readlink(self, p: bytes) -> None:
        self.same("readlink", p)

    @rule(p=any_path, flags=st.sampled_from([
        os.O_CREAT | os.O_WRONLY, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
        os.O_CREAT | os.O_TRUNC | os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_RDONLY,
        os.O_CREAT | os.O_NOFOLLOW | os.O_WRONLY, os.O_RDONLY | os.O_DIRECTORY,
        os.O_WRONLY | os.O_TRUNC]), mode=modes, d=data)
    def create(self, p: bytes, flags: int, mode: int, d: bytes) -> None:
        self.same("create", p, flags, mode, d)

    # two plain "make a file" rules, so that regular files are common
    @rule(target=made, p=simple_paths, d=data)
    def make_file(self, p: bytes, d: bytes) -> bytes:
        self.same("create", p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644, d)
        return p

    @rule(target=made, p=simple_paths, d=data)
    def make_file_too(self, p: bytes, d: bytes) -> bytes:
        self.same("create", p, os.O_CREAT | os.O_WRONLY, 0o640, d)
        return p

    @rule(p=any_path)
    def read(self, p: bytes) -> None:
        self.same("read", p)

    @rule(p=any_path, d=data, off=st.integers(0, 200), append=st.booleans())
    def pwrite(self, p: bytes, d: bytes, off: int, append: bool) -> None:
        self.same("pwrite", p, d, off, append)

    @rule(p=any_path, length=st.integers(-1, 300))
    def truncate(self, p: bytes, length: int) -> None:
        self.same("truncate", p, length)

    @rule(p=any_path, mode=modes)
    def chmod(self, p: bytes, mode: int) -> None:
        self.same("chmod", p, mode)

    @rule(p=any_path, uid=st.sampled_from([-1, 0, 1000]), gid=st.sampled_from([-1, 0, 1000]),
          follow=st.booleans())
    def chown(self, p: bytes, uid: int, gid: int, follow: bool) -> None:
        self.same("chown", p, uid, gid, follow)

    @rule(p=any_path, times=timespecs, follow=st.booleans())
    def utimens(self, p: bytes, times: object, follow: bool) -> None:
        self.same("utimens", p, times, follow)

    @rule(p=any_path, name=xnames, value=st.binary(max_size=20),
          flags=st.sampled_from([0, u.XATTR_CREATE, u.XATTR_REPLACE]), follow=st.booleans())
    def setxattr(self, p: bytes, name: bytes, value: bytes, flags: int, follow: bool) -> None:
        self.same("setxattr", p, name, value, flags, follow)

    @rule(p=any_path, name=xnames, follow=st.booleans())
    def getxattr(self, p: bytes, name: bytes, follow: bool) -> None:
        self.same("getxattr", p, name, follow)

    @rule(p=any_path, name=xnames, follow=st.booleans())
    def removexattr(self, p: bytes, name: bytes, follow: bool) -> None:
        self.same("removexattr", p, name, follow)

    @rule(p=any_path, follow=st.booleans())
    def listxattr(self, p: bytes, follow: bool) -> None:
        self.same("listxattr", p, follow)

    @rule(p=any_path, kind=st.sampled_from([u.S_IFIFO | 0o644, u.S_IFCHR | 0o600, u.S_IFSOCK | 0o755,
                                         u.S_IFREG | 0o640, 0o644, u.S_IFDIR | 0o755]))
    def mknod(self, p: bytes, kind: int) -> None:
        self.same("mknod", p, kind, os.makedev(1, 3))

    @rule(p=any_path, follow=st.booleans())
    def stat(self, p: bytes, follow: bool) -> None:
        self.same("stat", p, follow)

    @rule(p=any_path, mode=st.sampled_from([os.F_OK, os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.X_OK]))
    def access(self, p: bytes, mode: int) -> None:
        self.same("access", p, mode)

    @rule(p=any_path)
    def listdir(self, p: bytes) -> None:
        self.same("listdir", p)

    @rule(p=any_path)
    def chdir_getcwd(self, p: bytes) -> None:
        self.same("chdir_getcwd", p)


@pytest.mark.slow
def test_random_sequences_match_the_host_kernel() -> None:
    if os.geteuid() != 0:
        pytest.fail("this comparison runs as root, as CI does")
    run_state_machine_as_test(VsHost, settings=settings(
        max_examples=int(os.environ.get("VS_HOST_EXAMPLES", "400")), stateful_step_count=25,
        deadline=None, suppress_health_check=list(HealthCheck)))
