"""lklfuse: the Operations class without a mount, then real FUSE mounts (root and nobody)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pyfuse3
import pytest
import trio
from fusehelpers import Mount, as_nobody, lklfuse_cmd, wait_mounted, wait_unmounted
from helpers import IMAGES, LoopMount, need_root, need_tool, sha256_file, unpack_image
from treeutil import diff_manifests, host_manifest, project

from fstools.lklfuse.ops import KernelOps
from fstools.lklfuse.options import parse, split_escaped
from kernel import MS_RDONLY, Kernel

FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "mtime_ns", "target", "rdev", "xattrs",
          "links")
IMAGES_UNDER_TEST = [n for n in ("ext4-basic.img", "ext4-ext3.img", "xfs-v5.img", "btrfs-basic.img")
                     if (IMAGES / f"{n}.zst").exists()]


# -- options -------------------------------------------------------------------------------

def test_options_parse_lkl_style() -> None:
    o = parse(["type=ext4,part=2,ro", r"opts=data=ordered\,noatime,lock=/tmp/x,mb=32",
               "allow_other,uid=1000,fsname=disk,noauto,user"])
    assert (o.fstype, o.part, o.ro, o.rw, o.lock, o.mb, o.uid) == ("ext4", 2, True, False,
                                                                    "/tmp/x", 32, 1000)
    assert o.fs_opts == "data=ordered,noatime"
    assert o.fuse == {"allow_other", "fsname=disk"}
    assert split_escaped(r"a\,b,c") == ["a,b", "c"]
    for bad in ("type=ntfs", "part=x", "mb=1", "lock="):
        with pytest.raises(Exception) as e:
            parse([bad])
        assert getattr(e.value, "code", None) == 2


# -- pyfuse3's wait, without trio's scheduler when a request is there --------------------------

def test_fastwait_returns_at_once_then_lets_trio_run() -> None:
    """A readable descriptor is returned without a checkpoint, at most STREAK times in a
    row, then through trio's wait (a checkpoint: a cancelled scope shows which is which);
    an empty one is waited for through trio, and a writer task wakes it."""
    from fstools.lklfuse import fastwait

    class Fake:
        pass

    fake = Fake()
    waiter = fastwait.install(fake)  # type: ignore[arg-type]
    shim = fake.trio  # type: ignore[attr-defined]
    assert shim.open_nursery is trio.open_nursery  # the rest is trio's own
    r, w = os.pipe()

    async def write_later() -> None:
        await trio.sleep(0.05)
        os.write(w, b"y")

    async def main() -> None:
        os.write(w, b"x")  # readable from now on
        returned = 0
        with trio.CancelScope() as scope:
            scope.cancel()
            for _ in range(fastwait.STREAK + 1):
                await shim.lowlevel.wait_readable(r)
                returned += 1
        assert returned == fastwait.STREAK and scope.cancelled_caught
        assert waiter.fast == fastwait.STREAK
        assert os.read(r, 1) == b"x"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_later)
            await shim.lowlevel.wait_readable(r)  # nothing yet: trio waits, the writer runs
            assert os.read(r, 1) == b"y"
        async with shim.Lock():
            pass

    try:
        trio.run(main)
    finally:
        os.close(r)
        os.close(w)


def test_fastwait_spins_inside_a_burst_only() -> None:
    """A request that follows its predecessor within GRACE starts a burst: the next wait
    polls without sleeping (a request written meanwhile by another thread is found by the
    spin); the first request after a quiet spell is waited for asleep, without a spin."""
    from fstools.lklfuse import fastwait

    class Fake:
        pass

    fake = Fake()
    waiter = fastwait.install(fake, spin=0.5)  # type: ignore[arg-type]
    shim = fake.trio  # type: ignore[attr-defined]
    r, w = os.pipe()

    def write_after(delay: float) -> threading.Thread:
        t = threading.Thread(target=lambda: (threading.Event().wait(delay), os.write(w, b"z")))
        t.start()
        return t

    async def main() -> None:
        os.write(w, b"z")
        await shim.lowlevel.wait_readable(r)  # cold: found by the poll, a burst begins
        assert (waiter.fast, waiter.spun) == (1, 0)
        os.read(r, 1)
        t = write_after(0.02)
        await shim.lowlevel.wait_readable(r)  # inside the burst: found by the spin
        t.join()
        assert (waiter.fast, waiter.spun) == (2, 1)
        os.read(r, 1)

    try:
        trio.run(main)
    finally:
        os.close(r)
        os.close(w)
    assert fastwait._Waiter().spin == (fastwait.SPIN if len(os.sched_getaffinity(0)) > 1 else 0)


# -- the Operations class, no mount ------------------------------------------------------------

class _Ctx:
    def __init__(self, uid: int = 0, gid: int = 0) -> None:
        self.uid, self.gid, self.pid, self.umask = uid, gid, os.getpid(), 0o022


@pytest.fixture
def ops(tmp_path: Path):
    image = unpack_image("ext4-basic.img", tmp_path)
    k = Kernel(mb=16)
    disk = k.disk_add(image, readonly=True)
    root = k.mount_dev(disk, flags=MS_RDONLY)
    o = KernelOps(k.sys, root, readonly=True)
    yield o, k
    o.close_all()
    k.halt()


def test_lookup_counts_and_forget(ops) -> None:
    o, k = ops
    ctx = _Ctx()
    a = trio.run(o.lookup, pyfuse3.ROOT_INODE, b"small.txt", ctx)
    b = trio.run(o.lookup, pyfuse3.ROOT_INODE, b"small.txt", ctx)
    assert a.st_ino == b.st_ino == k.sys.stat("/mnt/vda/small.txt").st_ino  # the image's number
    node = o.nodes[a.st_ino]
    assert node.lookups == 2
    # a hard link is the same FUSE inode
    c = trio.run(o.lookup, trio.run(o.lookup, 1, b"dir", ctx).st_ino, b"hardlink2", ctx)
    assert c.st_ino == a.st_ino and node.lookups == 3
    fds_before = len(o.nodes)
    trio.run(o.forget, [(a.st_ino, 2)])
    assert a.st_ino in o.nodes
    trio.run(o.forget, [(a.st_ino, 1)])
    assert a.st_ino not in o.nodes and len(o.nodes) == fds_before - 1
    trio.run(o.forget, [(pyfuse3.ROOT_INODE, 5)])  # the root is never forgotten
    assert pyfuse3.ROOT_INODE in o.nodes


def test_errors_become_fuse_errors(ops) -> None:
    o, _k = ops
    with pytest.raises(pyfuse3.FUSEError) as e:
        trio.run(o.lookup, trio.run(o.lookup, 1, b"small.txt", _Ctx()).st_ino, b"x", _Ctx())
    assert e.value.errno == errno.ENOTDIR
    # a name that is not there: a negative entry the host may keep (inode 0, a timeout)
    a = trio.run(o.lookup, pyfuse3.ROOT_INODE, b"no-such-file", _Ctx())
    assert a.st_ino == 0 and a.entry_timeout > 0
    with pytest.raises(pyfuse3.FUSEError) as e:
        trio.run(o.mkdir, pyfuse3.ROOT_INODE, b"new", 0o755, _Ctx())
    assert e.value.errno == errno.EROFS
    with pytest.raises(pyfuse3.FUSEError) as e:
        trio.run(o.getattr, 987654321, _Ctx())
    assert e.value.errno == errno.ESTALE


def test_requests_run_with_the_callers_credentials(ops) -> None:
    o, _k = ops
    attrs = trio.run(o.lookup, pyfuse3.ROOT_INODE, b"dir", _Ctx())
    # dir is 0755 root: user 1000 can search it; writing is EROFS on this mount
    assert trio.run(o.access, attrs.st_ino, os.X_OK, _Ctx(1000, 1000))
    with pytest.raises(pyfuse3.FUSEError) as e:
        trio.run(o.access, attrs.st_ino, os.W_OK, _Ctx(1000, 1000))
    assert e.value.errno == errno.EROFS
    noperm = trio.run(o.lookup, pyfuse3.ROOT_INODE, b"lost+found", _Ctx())  # 0700 root
    assert not trio.run(o.access, noperm.st_ino, os.R_OK, _Ctx(1000, 1000))
    assert trio.run(o.access, noperm.st_ino, os.R_OK, _Ctx(0, 0))
    st = trio.run(o.statfs, _Ctx())
    assert st.f_blocks > 0 and st.f_namemax == 255


def test_supplementary_groups_of_the_requesting_process() -> None:
    """The groups a request runs with are those /proc gives for its process (as
    pyfuse3.get_sup_groups reads them), and none for a process that is gone."""
    from fstools.lklfuse.ops import sup_groups

    need_root()
    child = subprocess.Popen(["sleep", "30"], extra_groups=[4242, 31337, 7])
    try:
        assert sorted(sup_groups(child.pid)) == [7, 4242, 31337]
        assert set(sup_groups(child.pid)) == pyfuse3.get_sup_groups(child.pid)
        assert set(sup_groups(os.getpid())) == pyfuse3.get_sup_groups(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert sup_groups(child.pid) == ()


def test_read_and_xattrs(ops) -> None:
    o, _k = ops
    ctx = _Ctx()
    a = trio.run(o.lookup, pyfuse3.ROOT_INODE, b"small.txt", ctx)
    fi = trio.run(o.open, a.st_ino, os.O_RDONLY, ctx)
    assert trio.run(o.read, fi.fh, 0, 100) == b"hello, ext4\n"
    trio.run(o.release, fi.fh)
    assert b"user.comment" in trio.run(o.listxattr, a.st_ino, ctx)
    assert trio.run(o.getxattr, a.st_ino, b"user.comment", ctx) == b"a small file"


# -- real mounts ---------------------------------------------------------------------------------

def _reference(image: Path, tmp: Path) -> dict:
    copy = tmp / ("ref-" + image.name)
    shutil.copyfile(image, copy)
    with LoopMount(copy, tmp / "ref-mnt", options="rw") as mnt:
        return host_manifest(mnt)


@pytest.mark.fuse
@pytest.mark.parametrize("name", IMAGES_UNDER_TEST)
def test_tree_through_the_mount_equals_the_host_view(tmp_path: Path, name: str) -> None:
    need_root()
    need_tool("fusermount3")
    image = unpack_image(name, tmp_path)
    before = sha256_file(image)
    ref = _reference(image, tmp_path)
    with Mount(image, tmp_path / "m", "ro") as mnt:
        got = host_manifest(mnt)
    diff = diff_manifests(project(ref, FIELDS), project(got, FIELDS))
    assert not diff, "\n".join(diff)
    assert sha256_file(image) == before


@pytest.mark.fuse
def test_read_only_fallback_notice_and_clean_exit(tmp_path: Path) -> None:
    """Without rw support the mount is read-only, with a one-line notice."""
    need_root()
    image = unpack_image("xfs-v5.img", tmp_path)
    m = Mount(image, tmp_path / "m")
    with m as mnt:
        assert "mounted read-only" in m.result.stderr  # type: ignore[union-attr]
        assert len(m.result.stderr.strip().splitlines()) == 1  # type: ignore[union-attr]
        with pytest.raises(OSError) as e:
            (mnt / "new").write_text("x")
        assert e.value.errno == errno.EROFS


@pytest.mark.fuse
@pytest.mark.parametrize("load", ["at once", "idle", "busy"])
def test_sigterm_unmounts_and_exits_zero(tmp_path: Path, load: str) -> None:
    """The moment the mount appears (before the loop may have started), idle after a
    request, or with requests always waiting (four clients keep statfs, which the host
    never caches, coming, served without trio's scheduler by fastwait): SIGTERM unmounts
    and lklfuse exits 0."""
    need_root()
    image = unpack_image("ext4-ext3.img", tmp_path)
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen(lklfuse_cmd() + [str(image), str(mnt), "-f", "-o", "ro"],
                            stderr=subprocess.PIPE)
    wait_mounted(mnt, proc)
    if load != "at once":
        assert os.listdir(mnt)
    clients = 4 if load == "busy" else 0
    served = [0] * clients
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set():
            try:
                os.statvfs(mnt)
            except OSError:
                return
            served[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        while sum(served) < 500 * clients:
            assert proc.poll() is None
            threading.Event().wait(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
        if proc.poll() is None:
            proc.kill()
    wait_unmounted(mnt)


@pytest.mark.fuse
def test_concurrent_readers_get_the_right_bytes(tmp_path: Path) -> None:
    need_root()
    image = unpack_image("xfs-v5.img", tmp_path)
    ref = _reference(image, tmp_path)
    files = sorted(p for p, e in ref.items() if e["type"] == "reg" and (e["size"] or 0) > 0)[:40]
    errors: list[str] = []
    with Mount(image, tmp_path / "m", "ro") as mnt:
        def reader(chunk: list[str]) -> None:
            for p in chunk:
                h = hashlib.sha256((mnt / p).read_bytes()).hexdigest()
                if h != ref[p]["sha256"]:
                    errors.append(p)

        threads = [threading.Thread(target=reader, args=(files[i::4],)) for i in range(4)]
        procs = [subprocess.Popen(["sha256sum", *[str(mnt / p) for p in files[i::3]]],
                                  stdout=subprocess.PIPE, text=True) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, pr in enumerate(procs):
            out, _ = pr.communicate(timeout=60)
            for line, p in zip(out.splitlines(), files[i::3]):
                if line.split()[0] != ref[p]["sha256"]:
                    errors.append(p)
    assert files and not errors


@pytest.mark.fuse
def test_startup_errors_are_one_line_before_daemonizing(tmp_path: Path) -> None:
    need_root()
    image = unpack_image("ext4-ext3.img", tmp_path)
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(1 << 20))
    mnt = tmp_path / "m"
    mnt.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(lklfuse_cmd() + list(args), capture_output=True, text=True,
                              timeout=60)

    cases = [
        ((str(tmp_path / "none.img"), str(mnt)), 1, "No such file"),
        ((str(junk), str(mnt)), 1, "no ext2/ext3/ext4, btrfs or xfs"),
        ((str(image), str(tmp_path / "nodir")), 1, "nodir"),
        ((str(image), str(mnt), "-o", "type=xfs"), 1, "ext3.img"),
        ((str(image), str(mnt), "-o", "part=3"), 1, "no partition 3"),
        ((str(image), str(mnt), "-o", "mb=x"), 2, "mb=x"),
        (("--no-such", str(image), str(mnt)), 2, "no-such"),
    ]
    for args, code, words in cases:
        r = run(*args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == code, (args, r.stderr)
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, (args, lines)
        assert not os.path.ismount(mnt)
    # a mount point already in use
    with Mount(image, mnt, "ro"):
        r = run(str(image), str(mnt), "-o", "ro")
        assert r.returncode == 1 and "busy" in r.stderr


@pytest.mark.fuse
def test_lock_file_refuses_a_second_mount(tmp_path: Path) -> None:
    need_root()
    image = unpack_image("ext4-ext3.img", tmp_path)
    lock = tmp_path / "lock"
    with Mount(image, tmp_path / "a", f"ro,lock={lock}"):
        (tmp_path / "b").mkdir()
        r = subprocess.run(lklfuse_cmd() + [str(image), str(tmp_path / "b"), "-o",
                                            f"ro,lock={lock}"], capture_output=True, text=True)
        assert r.returncode == 2
        assert "locked" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not os.path.ismount(tmp_path / "b")


@pytest.mark.fuse
@pytest.mark.slow
def test_unprivileged_user_mounts_reads_and_unmounts(tmp_path: Path, user_env) -> None:
    need_tool("setpriv", "fusermount3")
    work = Path(str(user_env["base"])) / "work"
    work.mkdir()
    image = unpack_image("ext4-basic.img", work)
    mnt = work / "m"
    mnt.mkdir()
    for p in (work, image, mnt):
        os.chown(p, 65534, 65534)
    before = sha256_file(image)
    user = as_nobody()
    env = dict(os.environ, HOME=str(work))
    with Mount(image, mnt, "ro", user=user, python=str(user_env["python"]), env=env):
        def as_user(*cmd: str) -> str:
            r = subprocess.run(user + list(cmd), capture_output=True, text=True, env=env)
            assert r.returncode == 0, r.stderr
            return r.stdout

        assert as_user("cat", str(mnt / "small.txt")) == "hello, ext4\n"
        assert "user.comment" in as_user("getfattr", "-d", str(mnt / "small.txt"))
        listing = as_user("ls", "-ln", str(mnt / "dir"))
        assert "hardlink2" in listing
        # without allow_other, other users (root included) are kept out, as FUSE does
        with pytest.raises(PermissionError):
            os.listdir(mnt)
    assert sha256_file(image) == before


@pytest.mark.fuse
def test_no_access_to_dev_fuse_is_one_line(tmp_path: Path, user_env) -> None:
    need_tool("setpriv")
    work = Path(str(user_env["base"])) / "work2"
    work.mkdir()
    image = unpack_image("ext4-ext3.img", work)
    mnt = work / "m"
    mnt.mkdir()
    for p in (work, image, mnt):
        os.chown(p, 65534, 65534)
    mode = os.stat("/dev/fuse").st_mode & 0o777
    os.chmod("/dev/fuse", 0o600)
    try:
        r = subprocess.run(as_nobody() + [str(user_env["python"]), "-m", "fstools.lklfuse",
                                          str(image), str(mnt)], capture_output=True, text=True)
    finally:
        os.chmod("/dev/fuse", mode)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("lklfuse: /dev/fuse: Permission denied")
    assert len(r.stderr.strip().splitlines()) == 1





@pytest.mark.fuse
def test_small_files_reach_the_page_cache_at_open(tmp_path: Path) -> None:
    """Read-only mounts: a file of up to PREFILL bytes is stored in the host's page cache when
    opened, so reading it sends no READ request; larger files are read as usual."""
    import re
    import time

    from fstools.lklfuse.ops import PREFILL

    need_root()
    need_tool("mkfs.ext4", "fusermount3")
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"one": 1, "page-1": 4095, "page": 4096, "page+1": 4097, "edge-1": PREFILL - 1,
             "edge": PREFILL, "big": PREFILL + 1, "empty": 0}
    for name, size in sizes.items():
        (src / name).write_bytes(os.urandom(size))
    with open(src / "sparse", "wb") as f:  # a hole, then data
        f.seek(70_000)
        f.write(b"tail")
    image = tmp_path / "p.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(image), "16M"], check=True)
    mnt = tmp_path / "m"
    mnt.mkdir()
    log = open(tmp_path / "debug.log", "w+")
    proc = subprocess.Popen(lklfuse_cmd() + [str(image), str(mnt), "-f", "-d", "-o", "ro"],
                            stderr=log, stdout=log)
    try:
        wait_mounted(mnt, proc)
        inos = {}
        for name in [*sizes, "sparse"]:
            inos[name] = os.stat(mnt / name).st_ino
            for _ in range(2):
                assert (mnt / name).read_bytes() == (src / name).read_bytes(), name
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        proc.wait(timeout=30)
    time.sleep(0.1)
    log.seek(0)
    reads = {int(m.group(1)) for m in re.finditer(r"opcode: READ \(\d+\), nodeid: (\d+)", log.read())}
    assert inos["big"] in reads  # larger files: READ requests as usual
    assert not reads & {inos[n] for n in inos if n != "big"}, "a small file was read by READ"
