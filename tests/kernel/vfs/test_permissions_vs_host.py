"""Permission checks as an unprivileged user, against the host kernel.

Root sets up the same tree on the host and in our kernel (owners, modes,
sticky and setgid directories); then user 1000 runs the same operations on
both: on the host in a child process that has dropped to uid/gid 1000, in
our kernel after setresuid/setresgid/setgroups. Results, errnos and the
final trees must match.
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import tempfile

import pytest
from helpers import need_root
from syscall_model import HostFS, KernelFS

from kernel import Kernel

UID = GID = 1000

# (path, kind, mode, uid, gid)
SETUP = [
    ("pub", "dir", 0o777, 0, 0),
    ("sticky", "dir", 0o1777, 0, 0),
    ("sticky/rootfile", "file", 0o666, 0, 0),
    ("sticky/userfile", "file", 0o644, UID, GID),
    ("priv", "dir", 0o700, 0, 0),
    ("priv/inside", "file", 0o644, 0, 0),
    ("mine", "dir", 0o755, UID, GID),
    ("mine/f", "file", 0o644, UID, GID),
    ("mine/ro", "file", 0o444, UID, GID),
    ("rootfile", "file", 0o644, 0, 0),
    ("worldw", "file", 0o666, 0, 0),
    ("noperm", "file", 0o000, 0, 0),
    ("grp", "file", 0o660, 0, GID),
    ("grpdir", "dir", 0o2775, 0, GID),
    ("exe", "file", 0o755, 0, 0),
    ("suid", "file", 0o4755, UID, GID),
    ("sgidexe", "file", 0o2755, UID, 0),
    ("search-only", "dir", 0o711, 0, 0),
    ("search-only/known", "file", 0o644, 0, 0),
]

OPS = [
    ("create", b"pub/new", os.O_CREAT | os.O_WRONLY, 0o644, b"x"),
    ("create", b"rootfile", os.O_WRONLY, 0, b""),
    ("create", b"worldw", os.O_WRONLY | os.O_TRUNC, 0, b"hello"),
    ("read", b"noperm"),
    ("read", b"grp"),
    ("read", b"priv/inside"),
    ("read", b"search-only/known"),
    ("listdir", b"search-only"),
    ("listdir", b"priv"),
    ("stat", b"priv/inside", True),
    ("mkdir", b"pub/d", 0o755),
    ("mkdir", b"priv/d", 0o755),
    ("mkdir", b"grpdir/sub", 0o755),
    ("create", b"grpdir/file", os.O_CREAT | os.O_WRONLY, 0o2775, b""),
    ("unlink", b"sticky/rootfile"),
    ("unlink", b"sticky/userfile"),
    ("rename", b"sticky/rootfile", b"sticky/moved", 0),
    ("unlink", b"rootfile"),
    ("chmod", b"rootfile", 0o777),
    ("chmod", b"mine/f", 0o4777),
    ("chmod", b"sgidexe", 0o2755),
    ("chown", b"mine/f", 0, -1, True),
    ("chown", b"mine/f", -1, GID, True),
    ("chown", b"mine/f", -1, 0, True),
    ("chown", b"rootfile", UID, -1, True),
    ("utimens", b"worldw", None, True),
    ("utimens", b"worldw", ((5, 0), (6, 0)), True),
    ("utimens", b"rootfile", None, True),
    ("utimens", b"mine/f", ((5, 0), (6, 0)), True),
    ("truncate", b"worldw", 2),
    ("truncate", b"rootfile", 0),
    ("truncate", b"mine/ro", 0),
    ("setxattr", b"worldw", b"user.a", b"1", 0, True),
    ("setxattr", b"rootfile", b"user.a", b"1", 0, True),
    ("setxattr", b"mine/f", b"trusted.t", b"1", 0, True),
    ("setxattr", b"mine/f", b"user.ok", b"1", 0, True),
    ("getxattr", b"mine/f", b"user.ok", True),
    ("link", b"rootfile", b"pub/hard-to-root"),
    ("link", b"worldw", b"pub/hard-to-worldw"),
    ("link", b"mine/f", b"pub/hard-to-mine"),
    ("access", b"exe", os.X_OK),
    ("access", b"noperm", os.R_OK),
    ("access", b"worldw", os.W_OK),
    ("pwrite", b"suid", b"z", 0, False),
    ("symlink", b"rootfile", b"pub/sym"),
    ("rename", b"mine", b"pub/mine-moved", 0),
    ("rmdir", b"pub/d"),
    ("mknod", b"pub/fifo", stat.S_IFIFO | 0o644, 0),
    ("mknod", b"pub/chr", stat.S_IFCHR | 0o644, os.makedev(1, 3)),
]


def _setup(fs, chown, chmod) -> None:
    for path, kind, mode, uid, gid in SETUP:
        p = path.encode()
        if kind == "dir":
            fs.call("mkdir", p, 0o755)
        else:
            fs.call("create", p, os.O_CREAT | os.O_WRONLY, 0o644, b"data")
        chown(fs.p(p), uid, gid)
        chmod(fs.p(p), mode)


def _host_as_user(base: str) -> tuple[list, dict]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([GID])
            os.setresgid(GID, GID, GID)
            os.setresuid(UID, UID, UID)
            host = HostFS(base)
            results = [host.call(op[0], *op[1:]) for op in OPS]
            os.write(w, pickle.dumps(results))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return pickle.loads(data), HostFS(base).snapshot()


def test_unprivileged_operations_match_the_host() -> None:
    need_root()
    # /var/tmp: every user can pass through it (a private TMPDIR may not be)
    tmp = tempfile.mkdtemp(prefix="perm-vs-host-", dir="/var/tmp")
    try:
        os.chmod(tmp, 0o755)
        os.chown(tmp, 0, 0)
        host = HostFS(tmp)
        _setup(host, os.chown, os.chmod)
        with Kernel(mb=4) as k:
            k.sysctl["fs.protected_hardlinks"] = int(open("/proc/sys/fs/protected_hardlinks").read())
            k.sys.mkdir("/w", 0o755)
            ours = KernelFS(k.sys, "/w")
            _setup(ours, k.sys.chown, k.sys.chmod)
            assert ours.snapshot() == host.snapshot()
            host_results, host_tree = _host_as_user(tmp)
            k.sys.setgroups([GID])
            k.sys.setresgid(GID, GID)
            k.sys.setresuid(UID, UID)
            our_results = [ours.call(op[0], *op[1:]) for op in OPS]
            k.sys.setresuid(0, 0)  # back to root to look at everything
            k.sys.setresgid(0, 0)
            tree = ours.snapshot()
        diffs = [f"{op}: ours {o!r}, host {h!r}" for op, o, h in zip(OPS, our_results, host_results)
                 if o != h]
        assert not diffs, "\n".join(diffs)
        assert tree == host_tree
        # the checks above are not vacuous: some calls were refused, some went through
        assert sum(1 for r in host_results if isinstance(r, tuple) and r and r[0] == "err") >= 10
        assert sum(1 for r in host_results if not (isinstance(r, tuple) and r and r[0] == "err")) >= 10
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("uid,gid", [(1000, 1000), (1234, 55)])
def test_what_a_caller_creates_is_owned_by_the_caller(uid: int, gid: int) -> None:
    with Kernel(mb=4) as k:
        k.sys.mkdir("/pub", 0o777)
        k.sys.chmod("/pub", 0o777)  # mkdir applied the umask
        k.sys.setfsgid(gid)
        k.sys.setfsuid(uid)
        fd = k.sys.open("/pub/f", os.O_CREAT | os.O_WRONLY, 0o644)
        k.sys.close(fd)
        k.sys.mkdir("/pub/d", 0o755)
        k.sys.symlink("f", "/pub/l")
        for name in ("f", "d", "l"):
            st = k.sys.lstat(f"/pub/{name}")
            assert (st.st_uid, st.st_gid) == (uid, gid)
        # and that user cannot create in root's 0755 directory
        with pytest.raises(PermissionError):
            k.sys.mkdir("/not-mine", 0o755)
