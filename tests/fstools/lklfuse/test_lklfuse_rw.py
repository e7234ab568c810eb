"""lklfuse read-write: changes through real FUSE mounts (root, an unprivileged user, several
processes at once), then a clean unmount: e2fsck -fn clean, the clean flag set, the changes
present; and a POSIX semantics run compared with the host kernel's native ext4."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fusehelpers import as_nobody, lklfuse_cmd, wait_mounted, wait_unmounted
from helpers import LoopMount, need_root, need_tool, run
from treeutil import diff_manifests, host_manifest, kernel_manifest, project

from kernel import MS_RDONLY, Kernel

HERE = Path(__file__).resolve().parent
FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "rdev", "xattrs", "links",
          "nlink")


def mkfs(path: Path, mib: int = 64) -> Path:
    need_tool("mke2fs", "e2fsck")
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    run("mke2fs", "-q", "-F", "-t", "ext4", path)
    return path


class Foreground:
    """``lklfuse -f IMAGE MNT``; leaving unmounts with fusermount3 and waits for exit 0."""

    def __init__(self, image: Path, mnt: Path, *options: str, user: list[str] | None = None,
                 python: str = sys.executable, env: dict[str, str] | None = None) -> None:
        self.cmd = (user or []) + lklfuse_cmd(python) + [str(image), str(mnt), "-f"]
        for o in options:
            self.cmd += ["-o", o]
        self.user, self.mnt, self.env = user or [], mnt, env
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Path:
        self.mnt.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE, text=True, env=self.env)
        wait_mounted(self.mnt, self.proc)
        return self.mnt

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        subprocess.run(self.user + ["fusermount3", "-u", str(self.mnt)], capture_output=True,
                       env=self.env)
        rc = self.proc.wait(timeout=120)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        wait_unmounted(self.mnt)
        assert rc == 0, err
        assert "Traceback" not in err, err


def fsck_clean(image: Path) -> None:
    proc = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert "Filesystem state:         clean" in run("dumpe2fs", "-h", image).stdout


def apply_ops(root: Path) -> None:
    """Every kind of change, done the same way on the mount and on a host directory."""
    (root / "dir").mkdir()
    (root / "dir/sub").mkdir(mode=0o700)
    data = hashlib.sha256(b"x").digest() * 40000
    (root / "dir/file").write_bytes(data)
    with open(root / "dir/file", "r+b") as f:
        f.seek(3 << 20)
        f.write(b"sparse tail")
        os.fsync(f.fileno())
    (root / "small").write_text("small\n")
    os.link(root / "small", root / "dir/hardlink")
    os.symlink("../small", root / "dir/symlink")
    os.mkfifo(root / "fifo", 0o600)
    os.mknod(root / "null", 0o20666, os.makedev(1, 3))
    os.rename(root / "dir/sub", root / "moved")
    (root / "gone").write_text("bye")
    os.unlink(root / "gone")
    (root / "emptydir").mkdir()
    os.rmdir(root / "emptydir")
    os.chmod(root / "small", 0o4750)
    os.chown(root / "dir/file", 1234, 4321)
    os.utime(root / "small", ns=(1_500_000_000_111_111_111, 1_600_000_000_222_222_222))
    os.truncate(root / "dir/file", 100_000)
    os.setxattr(root / "small", b"user.note", b"a note")
    os.setxattr(root / "small", b"trusted.t", b"\x00\x01")
    os.setxattr(root / "dir", b"user.big", b"B" * 900)
    os.removexattr(root / "small", b"trusted.t")
    os.rename(root / "dir/file", root / "dir/file2")


@pytest.mark.fuse
def test_changes_through_the_mount_are_on_the_image(tmp_path: Path) -> None:
    need_root()
    need_tool("fusermount3")
    image = mkfs(tmp_path / "rw.img")
    host = tmp_path / "host"
    host.mkdir()
    with Foreground(image, tmp_path / "m") as mnt:
        apply_ops(mnt)
        assert (mnt / "small").stat().st_mtime_ns == 1_600_000_000_222_222_222
    apply_ops(host)
    fsck_clean(image)
    with Kernel(mb=32) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True), flags=MS_RDONLY)
        got = kernel_manifest(k.sys, root)
    got.pop("lost+found")
    got["."]["nlink"] -= 1
    want = host_manifest(host)
    assert diff_manifests(project(got, FIELDS), project(want, FIELDS)) == []
    assert got["small"]["mtime_ns"] == want["small"]["mtime_ns"]


@pytest.mark.fuse
def test_unprivileged_user_writes_own_files(tmp_path: Path, user_env) -> None:
    """Files created through the mount belong to the caller; unmount leaves the image clean."""
    need_tool("setpriv", "fusermount3")
    work = Path(str(user_env["base"])) / "rwwork"
    work.mkdir()
    image = mkfs(work / "u.img")
    mnt = work / "m"
    mnt.mkdir()
    for p in (work, image, mnt):
        os.chown(p, 65534, 65534)
    user = as_nobody()
    env = dict(os.environ, HOME=str(work))
    # the image's root directory belongs to root: let nobody write in it
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(image, readonly=False))
        k.sys.chmod(root, 0o777)
    with Foreground(image, mnt, user=user, python=str(user_env["python"]), env=env):
        script = ("set -e; cd " + str(mnt) + "; mkdir d; echo hello > d/f; ln -s f d/l; "
                  "mv d/f d/g; rm d/l; touch -d @1234567890 d/g; chmod 640 d/g; cat d/g")
        r = subprocess.run(user + ["sh", "-c", script], capture_output=True, text=True, env=env)
        assert r.returncode == 0 and r.stdout == "hello\n", r.stderr
    fsck_clean(image)
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True), flags=MS_RDONLY)
        st = k.sys.lstat(f"{root}/d/g")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o640)
        assert st.st_mtime_ns == 1234567890 * 10**9
        assert k.sys.lstat(f"{root}/d").st_uid == 65534


@pytest.mark.fuse
def test_concurrent_writers(tmp_path: Path) -> None:
    """Several processes write and read back different files at once."""
    need_root()
    image = mkfs(tmp_path / "c.img", 128)
    want: dict[str, str] = {}
    with Foreground(image, tmp_path / "m") as mnt:
        procs = []
        for i in range(4):
            name = f"w{i}"
            seed = hashlib.sha256(name.encode()).hexdigest()
            want[name] = seed
            code = ("import hashlib,sys,os\n"
                    f"d=sys.argv[1]\n"
                    f"for j in range(20):\n"
                    f"    data=hashlib.sha256(f'{seed}{{j}}'.encode()).digest()*(1000+j*997)\n"
                    f"    p=os.path.join(d,f'{name}-{{j}}')\n"
                    f"    open(p,'wb').write(data)\n"
                    f"    assert open(p,'rb').read()==data, p\n")
            procs.append(subprocess.Popen([sys.executable, "-c", code, str(mnt)]))
        assert [p.wait(timeout=300) for p in procs] == [0] * 4
        assert len(os.listdir(mnt)) == 81  # lost+found and 80 files
    fsck_clean(image)
    with Kernel(mb=32) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True), flags=MS_RDONLY)
        for name, seed in want.items():
            for j in range(20):
                data = hashlib.sha256(f"{seed}{j}".encode()).digest() * (1000 + j * 997)
                fd = k.sys.open(f"{root}/{name}-{j}", 0)
                assert k.sys.read(fd, len(data) + 1) == data
                k.sys.close(fd)


def _posix_run(d: Path, python: str) -> list:
    results = []
    for step, uid in (("owner", 0), ("a", 1000), ("b", 1001), ("final", 0)):
        cmd = [python, str(HERE / "posix_run.py"), str(d), step]
        if uid:
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        results.append(json.loads(r.stdout))
    return results


@pytest.mark.fuse
@pytest.mark.parametrize("options", [["allow_other"], ["allow_other", "default_permissions"]])
def test_posix_run_matches_native_ext4(tmp_path: Path, options: list[str]) -> None:
    """The same operations as three users give the same results and the same tree through
    lklfuse as on the host kernel's own ext4 mount."""
    need_root()
    need_tool("setpriv", "fusermount3")
    python = "/usr/bin/python3"  # readable by every user
    os.chmod(tmp_path, 0o755)
    native = mkfs(tmp_path / "native.img")
    ours = mkfs(tmp_path / "ours.img")
    for img in (native, ours):
        with Kernel(mb=16) as k:
            root = k.mount_dev(k.disk_add(img, readonly=False))
            k.sys.chmod(root, 0o755)
    with LoopMount(native, tmp_path / "n", options="rw") as mnt:
        os.chmod(tmp_path / "n", 0o755)
        expected = _posix_run(mnt, python)
    with Foreground(ours, tmp_path / "o", *options) as mnt:
        os.chmod(tmp_path, 0o755)
        got = _posix_run(mnt, python)
    for step, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert g == e, f"step {step}: " + "; ".join(
            f"{a[0]}: {b[1]!r} != {a[1]!r}" for a, b in zip(e, g, strict=False) if a != b)
    fsck_clean(ours)


@pytest.mark.fuse
def test_changes_reach_the_image_within_the_commit_interval(tmp_path: Path) -> None:
    """Without any fsync, a write through the mount is committed to the journal within
    seconds: a copy of the image taken while still mounted recovers to include it."""
    need_root()
    need_tool("debugfs")
    image = mkfs(tmp_path / "i.img")
    with Foreground(image, tmp_path / "m") as mnt:
        (mnt / "unsynced").write_bytes(b"committed by the interval\n")
        time.sleep(8)
        copy = tmp_path / "copy.img"
        copy.write_bytes(image.read_bytes())
    fix = subprocess.run(["e2fsck", "-fy", str(copy)], capture_output=True, text=True)
    assert fix.returncode in (0, 1) and "? yes" not in fix.stdout, fix.stdout
    out = run("debugfs", "-R", "cat /unsynced", copy).stdout
    assert out == "committed by the interval\n"


@pytest.mark.fuse
def test_missing_names_are_cached_and_appear_when_created(tmp_path: Path) -> None:
    """A lookup of a missing name is answered once: the host keeps the negative entry, so
    asking again (cp's stat before its create) costs no request; a name created or renamed
    into place through the mount shows at once."""
    import re

    need_root()
    need_tool("fusermount3")
    image = mkfs(tmp_path / "n.img")
    mnt = tmp_path / "m"
    mnt.mkdir()
    log = open(tmp_path / "debug.log", "w+")
    proc = subprocess.Popen(lklfuse_cmd() + [str(image), str(mnt), "-f", "-d"],
                            stderr=log, stdout=log)

    def lookups_since(mark: int) -> int:
        time.sleep(0.2)
        log.seek(mark)
        return len(re.findall(r"opcode: LOOKUP \(\d+\)", log.read()))

    try:
        wait_mounted(mnt, proc)
        time.sleep(0.2)
        mark = log.seek(0, os.SEEK_END)
        for _ in range(3):
            assert not os.path.lexists(mnt / "new")
        assert lookups_since(mark) == 1
        (mnt / "new").write_text("made\n")
        assert (mnt / "new").read_text() == "made\n" and "new" in os.listdir(mnt)
        (mnt / "a").write_text("renamed\n")
        assert not os.path.lexists(mnt / "b")
        os.rename(mnt / "a", mnt / "b")
        assert (mnt / "b").read_text() == "renamed\n" and not os.path.lexists(mnt / "a")
        os.mkdir(mnt / "d")
        assert not os.path.lexists(mnt / "d/x")
        os.link(mnt / "new", mnt / "d/x")
        assert os.stat(mnt / "d/x").st_nlink == 2
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        assert proc.wait(timeout=60) == 0
    fsck_clean(image)
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True), flags=MS_RDONLY)
        got = kernel_manifest(k.sys, root)
    assert sorted(got) == [".", "b", "d", "d/x", "lost+found", "new"]
    assert got["new"]["nlink"] == 2 and got["d/x"]["sha256"] == got["new"]["sha256"]


@pytest.mark.fuse
def test_the_image_is_locked_while_mounted_and_free_after(tmp_path: Path) -> None:
    """A tool asked to write into a mounted image waits a while for the lock, then refuses
    (exit 2) without touching it; the tool run right after ``fusermount3 -u`` (which returns
    before lklfuse has written its last changes back) waits for lklfuse to let go, then sees
    every change."""
    need_root()
    need_tool("fusermount3")
    image = mkfs(tmp_path / "i.img", 128)
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = subprocess.run(lklfuse_cmd() + [str(image), str(mnt)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    wait_mounted(mnt)
    names = [f"f{i:04d}" for i in range(1500)]
    for name in names:
        (mnt / name).write_bytes(name.encode() * 300)
    src = tmp_path / "src"
    src.mkdir()
    (src / "intruder").write_text("must not land\n")

    def tool(fn: str, *args: str) -> subprocess.CompletedProcess:
        code = f"from fstools.cptofs.__main__ import {fn}; {fn}()"
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=120)

    t0 = time.monotonic()
    busy = tool("cptofs_main", "-i", str(image), str(src / "intruder"), "/")
    lines = busy.stderr.strip().splitlines()
    assert busy.returncode == 2, busy.stderr
    assert "waiting up to 10 s" in lines[0] and "in use by another process" in lines[-1]
    assert len(lines) == 2 and "Traceback" not in busy.stderr
    assert time.monotonic() - t0 >= 10
    subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    out = tmp_path / "out"
    got = tool("cpfromfs_main", "-i", str(image), "/", str(out))
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in out.iterdir() if p.name != "lost+found") == names
    assert all((out / n).read_bytes() == n.encode() * 300 for n in names)
    wait_unmounted(mnt)
    with open(image, "rb") as f:  # lklfuse has let go: clean and whole
        fcntl.flock(f, fcntl.LOCK_EX)
    fsck_clean(image)
