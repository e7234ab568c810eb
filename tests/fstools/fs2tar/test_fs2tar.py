"""fs2tar end to end: archives extracted by GNU tar and bsdtar equal what the host kernel shows."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import IMAGES, LoopMount, need_root, need_tool, run, sha256_file, unpack_image
from treeutil import diff_manifests, host_manifest, project

FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "mtime_ns", "target", "rdev", "xattrs",
          "links")


def fs2tar(*args: str | os.PathLike[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "fstools.fs2tar", *map(os.fspath, args)],
                          capture_output=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"fs2tar failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def extract(archive: Path, dest: Path, tool: str) -> Path:
    """Extract as root into a tmpfs, which holds xattrs of any size and namespace
    (the host's own ext4 cannot take a 60 KiB value without ea_inode)."""
    dest.mkdir()
    if os.geteuid() == 0:
        run("mount", "-t", "tmpfs", "-o", "size=2g", "fs2tar-test", dest)
        _MOUNTS.append(dest)
    if tool == "gnutar":
        cmd = ["tar", "--xattrs", "--xattrs-include=*", "--acls", "--selinux", "--numeric-owner",
               "-xpf", archive, "-C", dest]
    else:
        cmd = ["bsdtar", "--xattrs", "--acls", "--numeric-owner", "-xpf", archive, "-C", dest]
    proc = subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return dest


_MOUNTS: list[Path] = []


@pytest.fixture(autouse=True)
def _unmount_extractions():
    yield
    while _MOUNTS:
        run("umount", "-l", _MOUNTS.pop(), check=False)


def reference(image: Path, tmp: Path, offset: int = 0, options: str = "rw") -> dict:
    """What the host kernel shows of the image (sockets excepted: tar cannot hold them).

    The mount is read-write on a copy, so the host replays a journal as it would.
    """
    copy = tmp / ("ref-" + image.name)
    shutil.copyfile(image, copy)
    with LoopMount(copy, tmp / "ref-mnt", offset=offset, options=options) as mnt:
        m = host_manifest(mnt)
    for e in m.values():  # XFS's second listing of its ACLs (see fs2tar/export.py)
        for name in ("trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT"):
            e["xattrs"].pop(name, None)
    return {p: e for p, e in m.items() if e["type"] != "sock"}


def compare(expected: dict, got: dict, skip_root_mtime: bool = False) -> None:
    a = project(expected, FIELDS, skip_root_mtime)
    b = project(got, FIELDS, skip_root_mtime)
    diff = diff_manifests(a, b)
    assert not diff, "\n".join(diff)


IMAGES_UNDER_TEST = [name.removesuffix(".zst") for name in (
    "ext4-basic.img.zst", "ext4-ext2.img.zst", "ext4-ext3.img.zst", "ext4-inline.img.zst",
    "ext4-bigalloc.img.zst", "xfs-v5.img.zst", "btrfs-basic.img.zst")
    if (IMAGES / name).exists()]


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGES_UNDER_TEST)
@pytest.mark.parametrize("tool", ["gnutar", "bsdtar"])
def test_archive_equals_the_host_view(tmp_path: Path, name: str, tool: str) -> None:
    need_root()
    need_tool("tar", "bsdtar")
    image = unpack_image(name, tmp_path)
    before = sha256_file(image)
    out = tmp_path / "out.tar"
    proc = fs2tar(image, out)
    assert sha256_file(image) == before, "fs2tar changed the image"
    ref = reference(image, tmp_path)
    got = host_manifest(extract(out, tmp_path / "x", tool))
    if tool == "bsdtar":
        # libarchive 3.6 reads a pax time "-S.F" as -S + F (the pax spec and GNU
        # tar: -(S + F)); no encoding reads right in both for times before
        # 1970 with a fraction, and we follow the spec.
        for e in ref.values():
            t = e["mtime_ns"]
            if t < 0 and t % 1_000_000_000:
                whole, frac = divmod(-t, 1_000_000_000)  # written as "-whole.frac"
                e["mtime_ns"] = -whole * 1_000_000_000 + frac
    # bsdtar does not restore the time of the directory it extracts into;
    # the archive has it (checked below), so only that one value is skipped
    compare(ref, got, skip_root_mtime=tool == "bsdtar")
    assert root_mtime_ns(out) == ref["."]["mtime_ns"]
    assert b"Traceback" not in proc.stderr


def root_mtime_ns(archive: Path) -> int:
    import libarchive
    from libarchive import ffi

    with libarchive.file_reader(os.fspath(archive)) as entries:
        for entry in entries:
            assert entry.pathname == "./"
            p = entry._entry_p
            return ffi.entry_mtime(p) * 1_000_000_000 + ffi.entry_mtime_nsec(p)
    raise AssertionError("empty archive")


def _tree_with_sparse_file(root: Path) -> None:
    root.mkdir()
    with open(root / "sparse", "wb") as f:
        f.truncate(50 << 20)
        f.seek(1 << 20)
        f.write(b"A" * 8192)
        f.seek(40 << 20)
        f.write(b"B" * 5000)
    (root / "dense").write_bytes(os.urandom(100_000))
    os.mkfifo(root / "fifo")
    os.symlink("dense", root / "link")
    os.link(root / "dense", root / "hard")


def test_sparse_files_stay_sparse(tmp_path: Path) -> None:
    need_tool("mkfs.ext4", "tar", "bsdtar")
    src = tmp_path / "src"
    _tree_with_sparse_file(src)
    image = tmp_path / "s.img"
    run("mkfs.ext4", "-q", "-F", "-d", src, image, "80M")
    out = tmp_path / "s.tar"
    fs2tar(image, out)
    # 50 MiB of logical size, 13 KiB of data: the archive stays small
    assert out.stat().st_size < 400_000
    for tool in ("gnutar", "bsdtar"):
        dest = extract(out, tmp_path / tool, tool)
        st = os.stat(dest / "sparse")
        assert st.st_size == 50 << 20
        assert st.st_blocks * 512 < 1 << 20, f"{tool} extracted a dense file"
        with open(dest / "sparse", "rb") as f:
            f.seek(1 << 20)
            assert f.read(8192) == b"A" * 8192
            f.seek(40 << 20)
            assert f.read(5000) == b"B" * 5000
            f.seek(0)
            assert f.read(1 << 20) == bytes(1 << 20)
        assert (dest / "dense").read_bytes() == (src / "dense").read_bytes()
        assert os.stat(dest / "hard").st_ino == os.stat(dest / "dense").st_ino
        assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
        assert os.readlink(dest / "link") == "dense"


def test_hard_links_are_link_entries(tmp_path: Path) -> None:
    need_tool("mkfs.ext4", "tar")
    src = tmp_path / "src"
    _tree_with_sparse_file(src)
    image = tmp_path / "h.img"
    run("mkfs.ext4", "-q", "-F", "-d", src, image, "80M")
    out = tmp_path / "h.tar"
    fs2tar(image, out)
    listing = run("tar", "-tvf", out).stdout
    lines = [ln for ln in listing.splitlines() if "./hard" in ln or "./dense" in ln]
    assert any(ln.startswith("h") and "link to ./dense" in ln for ln in lines), listing


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_paths_longer_than_path_max(tmp_path: Path, jobs: str) -> None:
    """A tree 2,100 directories deep (paths past PATH_MAX, 4096 bytes) is archived whole,
    by one process and by workers (which open an entry's directory by its path, a piece
    at a time): the deepest file with its data and its xattr, as GNU tar and bsdtar list
    it and Python's tarfile reads it."""
    import tarfile

    need_tool("mkfs.ext4", "tar", "bsdtar")
    image = tmp_path / "d.img"
    run("mkfs.ext4", "-q", "-F", image, "64M")
    # made by the host kernel, a directory at a time (mkfs.ext4 -d aborts on such a tree,
    # cp -a and tar -x stop at PATH_MAX)
    with LoopMount(image, tmp_path / "mnt", options="rw") as mnt:
        fd = os.open(mnt, os.O_RDONLY)
        try:
            for _ in range(2100):
                os.mkdir("dd", dir_fd=fd)
                nfd = os.open("dd", os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = nfd
            leaf = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
            os.write(leaf, b"deep down")
            os.setxattr(f"/proc/self/fd/{leaf}", "user.depth", b"2100")
            os.close(leaf)
        finally:
            os.close(fd)
    out = tmp_path / "d.tar"
    fs2tar("-j", jobs, image, out)
    name = "./" + "dd/" * 2100 + "leaf"
    assert len(name) > 4096
    for lister in (["tar", "-tf", out], ["bsdtar", "-tf", out]):
        assert name in run(*lister).stdout.splitlines()
    with tarfile.open(out) as tf:
        member = tf.getmember(name)
        assert member.pax_headers.get("SCHILY.xattr.user.depth") == "2100"
        f = tf.extractfile(member)
        assert f is not None and f.read() == b"deep down"


@pytest.mark.parametrize("suffix,magic", [(".tar.gz", b"\x1f\x8b"), (".tgz", b"\x1f\x8b"),
                                          (".tar.xz", b"\xfd7zXZ"), (".tar.zst", b"\x28\xb5\x2f\xfd"),
                                          (".tar.bz2", b"BZh")])
def test_compression_follows_the_name(tmp_path: Path, suffix: str, magic: bytes) -> None:
    need_tool("tar")
    image = unpack_image("ext4-ext3.img", tmp_path)
    out = tmp_path / ("o" + suffix)
    fs2tar(image, out)
    assert out.read_bytes()[:len(magic)] == magic
    names = run("tar", "-tf", out).stdout.splitlines()
    assert "./" in names and len(names) > 5


def test_stdout_and_formats(tmp_path: Path) -> None:
    need_tool("tar")
    image = unpack_image("ext4-ext3.img", tmp_path)
    proc = fs2tar(image, "-")
    ref = tmp_path / "file.tar"
    fs2tar(image, ref)
    assert run("tar", "-tf", "-", input=None, stdin=open(ref, "rb")).stdout  # readable
    names_stdout = subprocess.run(["tar", "-tf", "-"], input=proc.stdout, capture_output=True)
    assert names_stdout.returncode == 0
    assert names_stdout.stdout.decode() == run("tar", "-tf", ref).stdout
    out = tmp_path / "gnu.tar"
    p = fs2tar("--format", "gnu", image, out)
    assert run("tar", "-tf", out).stdout.splitlines()[0] == "./"
    # ustar cannot hold every time stamp of this image: those files are
    # reported one line each, left out with --keep-going (status 3)
    out = tmp_path / "ustar.tar"
    p = fs2tar("--format", "ustar", "--keep-going", image, out, check=False)
    assert p.returncode == 3, p.stderr
    assert b"in --format ustar; left out" in p.stderr
    assert run("tar", "-tf", out).stdout.splitlines()[0] == "./"
    p = fs2tar("--format", "ustar", image, tmp_path / "strict.tar", check=False)
    assert p.returncode == 1 and not (tmp_path / "strict.tar").exists()


def test_member_names_are_relative(tmp_path: Path) -> None:
    image = unpack_image("ext4-ext3.img", tmp_path)
    out = tmp_path / "o.tar"
    fs2tar(image, out)
    names = run("tar", "-tf", out).stdout.splitlines()
    assert names[0] == "./"
    assert all(n.startswith("./") and not n.startswith("/") for n in names)


def test_image_never_changes_even_when_the_journal_needs_recovery(tmp_path: Path) -> None:
    image = unpack_image("ext4-dirty.img", tmp_path)
    before = sha256_file(image)
    out = tmp_path / "d.tar"
    fs2tar(image, out)
    assert sha256_file(image) == before
    if os.geteuid() == 0:
        need_tool("tar")
        # what we exported is the replayed state, the one the host kernel shows
        ref = reference(image, tmp_path, options="rw")
        got = host_manifest(extract(out, tmp_path / "x", "gnutar"))
        compare(ref, got)


def test_selinux_lines(tmp_path: Path) -> None:
    need_tool("mkfs.ext4", "setfattr")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    os.setxattr(src / "f", "security.selinux", b"system_u:object_r:etc_t:s0\0")
    image = tmp_path / "se.img"
    run("mkfs.ext4", "-q", "-F", "-d", src, image, "16M")
    lines = tmp_path / "labels.txt"
    fs2tar("-s", lines, image, tmp_path / "se.tar")
    assert "/f system_u:object_r:etc_t:s0" in lines.read_text().splitlines()


# -- errors ---------------------------------------------------------------------------------

def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_missing_image(tmp_path: Path) -> None:
    proc = fs2tar(tmp_path / "nope.img", tmp_path / "o.tar", check=False)
    _one_line_error(proc, "nope.img", "No such file")
    assert proc.returncode == 1
    assert not (tmp_path / "o.tar").exists()


def test_not_a_filesystem(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(1 << 20))
    proc = fs2tar(junk, tmp_path / "o.tar", check=False)
    _one_line_error(proc, "junk.img", "no ext2/ext3/ext4, btrfs or xfs filesystem")
    assert not (tmp_path / "o.tar").exists()


def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    proc = fs2tar("--no-such-option", "a", "b", check=False)
    _one_line_error(proc, "no-such-option")
    assert proc.returncode == 2
    proc = fs2tar("-t", "ntfs", "a", "b", check=False)
    assert proc.returncode == 2
    _one_line_error(proc, "ntfs")


def test_truncated_image(tmp_path: Path) -> None:
    image = unpack_image("ext4-ext3.img", tmp_path)
    with open(image, "r+b") as f:
        f.truncate(os.path.getsize(image) // 3)
    proc = fs2tar(image, tmp_path / "o.tar", check=False)
    line = _one_line_error(proc)
    assert "ext3.img" in line or "ext" in line
    assert not (tmp_path / "o.tar").exists()


def test_wrong_type_is_refused(tmp_path: Path) -> None:
    image = unpack_image("ext4-ext3.img", tmp_path)
    proc = fs2tar("-t", "xfs", image, tmp_path / "o.tar", check=False)
    _one_line_error(proc, "ext3.img")


def test_output_must_not_be_the_image(tmp_path: Path) -> None:
    image = unpack_image("ext4-ext3.img", tmp_path)
    before = sha256_file(image)
    proc = fs2tar(image, image, check=False)
    _one_line_error(proc, "overwrite the image")
    assert sha256_file(image) == before


# -- partitioned disks ----------------------------------------------------------------------

def _partitioned(tmp: Path, label: str, fs_parts: list[int]) -> Path:
    """A 64 MiB disk: partitions 1 and 2 of 24 MiB; ext4 (from a small tree) in ``fs_parts``."""
    need_tool("sfdisk", "mkfs.ext4")
    disk = tmp / f"{label}.img"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    run("sfdisk", "-q", disk, input=f"label: {label}\nstart=2048, size=49152\nstart=51200, size=49152\n")
    for n in fs_parts:
        src = tmp / f"tree{n}"
        src.mkdir()
        (src / f"in-partition-{n}").write_text(f"partition {n}\n")
        os.symlink(f"in-partition-{n}", src / "link")
        start = 2048 if n == 1 else 51200
        run("mkfs.ext4", "-q", "-F", "-E", f"offset={start * 512}", "-d", src, disk, "24M")
    return disk


@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_partitioned_disk_picks_the_only_filesystem(tmp_path: Path, label: str) -> None:
    need_tool("tar")
    disk = _partitioned(tmp_path, label, [2])
    out = tmp_path / "p.tar"
    fs2tar(disk, out)
    names = run("tar", "-tf", out).stdout.splitlines()
    assert "./in-partition-2" in names
    if os.geteuid() == 0:
        ref = reference(disk, tmp_path, offset=51200 * 512)
        compare(ref, host_manifest(extract(out, tmp_path / "x", "gnutar")))


@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_several_filesystems_need_a_choice(tmp_path: Path, label: str) -> None:
    disk = _partitioned(tmp_path, label, [1, 2])
    proc = fs2tar(disk, tmp_path / "p.tar", check=False)
    line = _one_line_error(proc, "several partitions", "partition 1", "partition 2")
    assert "MiB" in line
    out = tmp_path / "p1.tar"
    fs2tar("-P", "1", disk, out)
    assert "./in-partition-1" in run("tar", "-tf", out).stdout.splitlines()
    proc = fs2tar("-P", "7", disk, tmp_path / "p7.tar", check=False)
    _one_line_error(proc, "no partition 7")


def test_keep_going_over_an_unreadable_file(tmp_path: Path) -> None:
    """A damaged extent tree makes one file unreadable: the rest is exported."""
    need_tool("mkfs.ext4", "debugfs", "tar")
    src = tmp_path / "src"
    src.mkdir()
    (src / "good").write_bytes(b"fine\n" * 100)
    with open(src / "bad", "wb") as f:  # fragmented on purpose: an extent tree block
        for i in range(400):
            f.seek(i * 8192)
            f.write(b"x" * 4096)
    image = tmp_path / "k.img"
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^metadata_csum", "-d", src, image, "32M")
    stat_out = run("debugfs", "-R", "stat /bad", image).stdout
    # the index node of the extent tree (debugfs prints it as "(ETB0):<block>")
    etb = int(stat_out.split("(ETB0):")[1].split()[0].rstrip(","))
    with open(image, "r+b") as f:
        f.seek(etb * 4096)
        f.write(b"\xde\xad" * 6)  # breaks the extent header magic
    before = sha256_file(image)
    strict = fs2tar(image, tmp_path / "s.tar", check=False)
    _one_line_error(strict, "bad")
    assert not (tmp_path / "s.tar").exists()
    out = tmp_path / "k.tar"
    proc = fs2tar("--keep-going", image, out, check=False)
    assert proc.returncode == 3, proc.stderr
    assert b"./bad" in proc.stderr and b"Traceback" not in proc.stderr
    assert sha256_file(image) == before
    x = tmp_path / "x"
    x.mkdir()
    run("tar", "-xf", out, "-C", x)
    assert (x / "good").read_bytes() == b"fine\n" * 100
