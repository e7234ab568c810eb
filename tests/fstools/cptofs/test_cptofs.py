"""cptofs end to end: copied into fresh images made by mkfs, checked by the filesystem's
fsck, read back by the host kernel and by cpfromfs, and compared with the source."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import IMAGES, LoopMount, need_root, need_tool, run, sha256_file, unpack_image
from treeutil import diff_manifests, host_manifest, project

FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "mtime_ns", "target", "rdev", "xattrs",
          "links", "nlink")

# the writable filesystems: how to make one and how to check it
MKFS = {
    "ext4": ("mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256"),
    "ext2": ("mkfs.ext2", "-q", "-F", "-b", "4096", "-I", "256"),
}
FSCK = {"ext4": ("e2fsck", "-fn"), "ext2": ("e2fsck", "-fn")}


def new_image(path: Path, fstype: str, size_mb: int, *extra: str) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    run(*MKFS[fstype], *extra, path)
    return path


def fsck(image: Path, fstype: str) -> str:
    proc = run(*FSCK[fstype], image, check=False)
    assert proc.returncode == 0, f"{fstype} fsck found problems:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def clean_unmount(image: Path) -> None:
    """The superblock says clean and no journal needs recovery (LKL leaves it dirty)."""
    head = run("dumpe2fs", "-h", image).stdout
    state = next(line for line in head.splitlines() if line.startswith("Filesystem state:"))
    assert state.split(":", 1)[1].strip() == "clean", state
    features = next(line for line in head.splitlines() if line.startswith("Filesystem features:"))
    assert "needs_recovery" not in features


def without_sockets(m: dict) -> dict:
    return {p: e for p, e in m.items() if e["type"] != "sock"}


def same(a: dict, b: dict, fields: tuple[str, ...] = FIELDS) -> None:
    diff = diff_manifests(project(without_sockets(a), fields), project(without_sockets(b), fields))
    assert not diff, "\n".join(diff)


def host_view(image: Path, tmp: Path, sub: str = "") -> dict:
    """What the host kernel shows (a read-only loop mount of a copy)."""
    copy = tmp / ("view-" + image.name)
    shutil.copyfile(image, copy)
    try:
        with LoopMount(copy, tmp / "view-mnt") as mnt:
            return host_manifest(mnt / sub if sub else mnt)
    finally:
        copy.unlink()


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("fstype", sorted(MKFS))
def test_round_trip(tmp_path: Path, tmpfs, cptofs, cpfromfs, rich_tree: Path, fstype: str) -> None:
    """The rich tree in: fsck clean, cleanly unmounted, the host kernel sees the source
    exactly; out again with cpfromfs: the source exactly (sockets left out, with a warning)."""
    need_tool(MKFS[fstype][0], FSCK[fstype][0])
    image = new_image(tmp_path / f"rt.{fstype}", fstype, 160, "-N", "16384")
    proc = cptofs("-i", image, rich_tree, "/")
    assert b"socket skipped" in proc.stderr
    fsck(image, fstype)
    clean_unmount(image)
    src = host_manifest(rich_tree)
    same(src, host_view(image, tmp_path, "tree"))
    out = tmpfs(tmp_path / "out")
    cpfromfs("-i", image, "/tree", out)
    same(src, host_manifest(out / "tree"))
    assert os.stat(out / "tree" / "sparse").st_blocks * 512 < 200_000


@pytest.mark.parametrize("fstype", ["ext4"])
def test_lkl_cptofs_test_steps(tmp_path: Path, fstype: str) -> None:
    """tools/lkl/tests/cptofs.sh: a file, then a tree, copied in and out with the same
    binary (cpfromfs is a symlink to cptofs), compared with diff -r."""
    need_tool("diff", MKFS[fstype][0])
    image = new_image(tmp_path / "lkl.img", fstype, 32)
    script = tmp_path / "cptofs"
    script.write_text(f"#!{sys.executable}\nfrom fstools.cptofs.__main__ import cptofs_main\n"
                      "cptofs_main()\n")
    script.chmod(0o755)
    tdir = tmp_path / "t"
    tdir.mkdir()
    os.symlink(script, tdir / "cpfromfs")
    cptofs_cmd = [script, "-p", "-t", fstype, "-i", image]
    cpfromfs_cmd = [tdir / "cpfromfs", "-p", "-t", fstype, "-i", image]

    def sh(*cmd: object) -> None:
        proc = subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)

    # cptofs_file
    (tdir / "round-trip").mkdir()
    (tdir / "data").write_text("data\n")
    sh(*cptofs_cmd, tdir / "data", "/")
    sh(*cpfromfs_cmd, "/data", f"{tdir}/round-trip/")
    sh("diff", tdir / "data", tdir / "round-trip" / "data")
    # cptofs_tree
    (tdir / "tree" / "full" / "of" / "stuff").mkdir(parents=True)
    (tdir / "tree" / "data").write_text("data\n")
    (tdir / "tree" / "full" / "more").write_text("more\n")
    (tdir / "tree" / "full" / "of" / "here").write_text("here\n")
    sh(*cptofs_cmd, tdir / "tree", "/")
    sh(*cpfromfs_cmd, "/tree", tdir / "round-trip")
    sh("diff", "-r", tdir / "tree", tdir / "round-trip" / "tree")
    fsck(image, fstype)
    clean_unmount(image)


def test_full_image(tmp_path: Path, cptofs) -> None:
    """No space left: one line naming the file, exit status 1; the image is fsck-clean,
    cleanly unmounted, and every file copied before is intact (the cut one removed)."""
    need_tool("mkfs.ext4")
    image = new_image(tmp_path / "small.img", "ext4", 8)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i:02d}").write_bytes(os.urandom(1 << 20))
    proc = cptofs("-i", image, src, "/", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert err.startswith(f"cptofs: {image}:/src/f"), err
    fsck(image, "ext4")
    clean_unmount(image)
    view = host_view(image, tmp_path, "src")
    copied = sorted(p for p in view if p != ".")
    assert copied and len(copied) < 12
    cut = err.split(":/src/", 1)[1].split(":", 1)[0]
    assert cut not in copied, "the partly written file must not stay behind"
    for p in copied:
        assert view[p]["sha256"] == host_manifest(src)[p]["sha256"], p


def _host_refuses_writes_past_20_mib() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 20, 20 << 20))


def test_host_refuses_the_images_writes(tmp_path: Path, cptofs) -> None:
    """The host cannot take the image's writes (its disk is full; here, writes past 20 MiB
    of any file fail): one line naming the image and the I/O error, exit status 1, and
    the image is as a crash would leave it: the journal replays it to a clean filesystem."""
    need_tool("mkfs.ext4", "e2fsck")
    image = new_image(tmp_path / "h.img", "ext4", 256)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(48 << 20))
    proc = cptofs("-i", image, src, "/", check=False, preexec_fn=_host_refuses_writes_past_20_mib)
    err = [line for line in proc.stderr.decode().splitlines() if not line.startswith("[kernel]")]
    assert proc.returncode == 1, err
    assert len(err) == 1 and err[0].startswith(f"cptofs: {image}: Input/output error"), err
    assert "a write issued earlier failed" in err[0], err
    fix = run("e2fsck", "-fy", image, check=False)
    assert fix.returncode in (0, 1) and "? yes" not in fix.stdout, fix.stdout
    fsck(image, "ext4")


def test_options_owner_group_selinux(tmp_path: Path, cptofs) -> None:
    need_root()
    need_tool("mkfs.ext4", "getfattr")
    image = new_image(tmp_path / "o.img", "ext4", 16)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("f")
    os.symlink("f", src / "d" / "l")
    cptofs("-i", image, "-o", "1234", "-g", "5678", "-s", "system_u:object_r:etc_t:s0",
           src / "d", "/")
    view = host_view(image, tmp_path, "d")
    assert {(e["uid"], e["gid"]) for e in view.values()} == {(1234, 5678)}
    label = b"system_u:object_r:etc_t:s0\0".hex()
    for p in (".", "f"):
        assert view[p]["xattrs"]["security.selinux"] == label


def test_existing_directories_merge_and_files_are_replaced(tmp_path: Path, cptofs,
                                                           cpfromfs) -> None:
    need_tool("mkfs.ext4")
    image = new_image(tmp_path / "m.img", "ext4", 16)
    a = tmp_path / "a" / "d"
    a.mkdir(parents=True)
    (a / "keep").write_text("first")
    (a / "f").write_text("old, longer content")
    cptofs("-i", image, a, "/")
    b = tmp_path / "b" / "d"
    b.mkdir(parents=True)
    (b / "f").write_text("new")
    (b / "g").write_text("g")
    cptofs("-i", image, b, "/")
    out = tmp_path / "out"
    out.mkdir()
    cpfromfs("-i", image, "/d", out)
    assert sorted(os.listdir(out / "d")) == ["f", "g", "keep"]
    assert (out / "d" / "f").read_text() == "new"
    fsck(image, "ext4")


def test_new_name_and_several_sources(tmp_path: Path, cptofs, cpfromfs) -> None:
    need_tool("mkfs.ext4")
    image = new_image(tmp_path / "n.img", "ext4", 16)
    for n in ("x", "y"):
        (tmp_path / n).write_text(n)
    cptofs("-i", image, tmp_path / "x", "/renamed")
    cptofs("-i", image, tmp_path / "x", tmp_path / "y", "/lost+found")
    proc = cptofs("-i", image, tmp_path / "x", tmp_path / "y", "/renamed", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith(f"cptofs: {image}:/renamed: Not a directory")
    proc = cptofs("-i", image, tmp_path / "x", "/no/such", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"cptofs: {image}:/no: No such file or directory\n"
    out = tmp_path / "out"
    out.mkdir()
    cpfromfs("-i", image, "/renamed", "/lost+found/x", "/lost+found/y", out)
    assert sorted(os.listdir(out)) == ["renamed", "x", "y"]
    fsck(image, "ext4")


def test_the_image_is_never_copied_into_itself(tmp_path: Path, cptofs) -> None:
    need_tool("mkfs.ext4")
    src = tmp_path / "src"
    src.mkdir()
    image = new_image(src / "self.img", "ext4", 16)
    (src / "other").write_text("other")
    proc = cptofs("-i", image, src, "/")
    assert b"is the image itself; skipped" in proc.stderr
    fsck(image, "ext4")


# -- errors that need no writable driver -------------------------------------------------------
def test_missing_source_is_reported_before_the_image_is_opened(tmp_path: Path, cptofs) -> None:
    (tmp_path / "a").write_text("a")
    proc = cptofs("-i", tmp_path / "no-image", tmp_path / "a", tmp_path / "nope", "/",
                  check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"cptofs: {tmp_path / 'nope'}: No such file or directory\n"
    proc = cptofs("-i", tmp_path / "no-image", f"{tmp_path}/*.none", "/", check=False)
    assert proc.returncode == 1
    assert "nothing matches" in proc.stderr.decode()


def test_missing_image(tmp_path: Path, cptofs) -> None:
    (tmp_path / "a").write_text("a")
    proc = cptofs("-i", tmp_path / "no-image", tmp_path / "a", "/", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"cptofs: {tmp_path / 'no-image'}: No such file or directory\n"


def test_usage_errors(tmp_path: Path, cptofs) -> None:
    (tmp_path / "a").write_text("a")
    for args in (("-i", tmp_path / "img", tmp_path / "a"),          # no destination
                 (tmp_path / "a", "/"),                               # no image
                 ("-i", tmp_path / "img", "-o", "root", tmp_path / "a", "/"),
                 ("-i", tmp_path / "img", "-P", "-1", tmp_path / "a", "/"),
                 ("-i", tmp_path / "img", "--gid-map", "5", tmp_path / "a", "/"),
                 ("-i", tmp_path / "img", "-t", "vfat", tmp_path / "a", "/")):
        proc = cptofs(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.decode().count("\n") == 1, proc.stderr


def test_read_only_filesystem_is_one_line(tmp_path: Path, cptofs) -> None:
    """A filesystem the kernel can only read (XFS: no write path) is refused with one
    line naming the image, and the image is left unchanged."""
    image = unpack_image("xfs-1k.img", tmp_path)
    before = sha256_file(image)
    (tmp_path / "a").write_text("a")
    proc = cptofs("-i", image, tmp_path / "a", "/", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.count("\n") == 1 and err.startswith(f"cptofs: {image}: ")
    assert "Read-only file system" in err
    assert sha256_file(image) == before


def test_unwritable_image_file(tmp_path: Path, cptofs) -> None:
    """An image file the user may not write: refused before the kernel starts."""
    need_root()
    shutil.copyfile(IMAGES / "ext4-dirty.json", tmp_path / "a")
    image = unpack_image("ext4-dirty.img", tmp_path)
    image.chmod(0o444)
    tmp_path.chmod(0o755)
    proc = cptofs("-i", image.name, "a", "/", user=65534, check=False, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.decode() == ("cptofs: ext4-dirty.img: Permission denied "
                                    "(the image must be writable)\n")
