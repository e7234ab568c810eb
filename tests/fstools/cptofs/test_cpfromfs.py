"""cpfromfs end to end: what it copies out equals what the host kernel shows of the image."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import IMAGES, LoopMount, need_root, need_tool, run, sha256_file, unpack_image
from treeutil import diff_manifests, host_manifest, load, project

FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "mtime_ns", "target", "rdev", "xattrs",
          "links", "nlink")
XFS_ACL_NAMES = ("trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT")

_spec = importlib.util.spec_from_file_location("make_ext4", IMAGES / "make_ext4.py")
assert _spec is not None and _spec.loader is not None
make_ext4: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_ext4)


def without_sockets(m: dict) -> dict:
    out = {p: e for p, e in m.items() if e["type"] != "sock"}
    for e in out.values():
        for name in XFS_ACL_NAMES:  # XFS's second listing of its ACLs
            e["xattrs"].pop(name, None)
    return out


def compare(expected: dict, got: dict, fields: tuple[str, ...] = FIELDS) -> None:
    diff = diff_manifests(project(without_sockets(expected), fields),
                          project(without_sockets(got), fields))
    assert not diff, "\n".join(diff)


def reference(image: Path, tmp: Path) -> dict:
    """The host kernel's view of the image, from a read-only loop mount of a copy."""
    copy = tmp / ("ref-" + image.name)
    shutil.copyfile(image, copy)
    with LoopMount(copy, tmp / "ref-mnt") as mnt:
        m = host_manifest(mnt)
    copy.unlink()
    return m


# -- the committed images --------------------------------------------------------------------
EXT4_IMAGES = ["basic", "ext2", "ext3", "inline", "bigalloc", "features"]
XFS_IMAGES = ["xfs-v5", "xfs-1k", "xfs-v4"]


@pytest.mark.parametrize("name", EXT4_IMAGES)
def test_ext4_image_copied_out_whole(tmp_path: Path, tmpfs, cpfromfs, name: str) -> None:
    """Every entry, byte, xattr, ACL, hard link and ns time of the committed ext4 images
    (huge directories compared by their summaries); the image never changes."""
    need_root()
    exp = json.loads((IMAGES / f"ext4-{name}.json").read_text())
    image = unpack_image(f"ext4-{name}.img", tmp_path)
    before = sha256_file(image)
    out = tmpfs(tmp_path / "out")
    proc = cpfromfs("-i", image, "/", out)
    assert sha256_file(image) == before
    got, big = make_ext4.summarize(host_manifest(out), list(exp["big"]))
    compare(exp["tree"], got)
    for d, summary in exp["big"].items():
        for key in ("count", "names_sha256", "records"):
            assert big[d][key] == summary[key], (d, key)
    if any(e["type"] == "sock" for e in exp["tree"].values()):
        assert b"socket skipped" in proc.stderr


@pytest.mark.parametrize("name", XFS_IMAGES)
def test_xfs_image_copied_out_whole(tmp_path: Path, tmpfs, cpfromfs, name: str) -> None:
    need_root()
    expected = load(IMAGES / f"{name}.json")
    image = unpack_image(f"{name}.img", tmp_path)
    out = tmpfs(tmp_path / "out")
    cpfromfs("-i", image, "-t", "xfs", "/", out)
    # V4 images were made from a protofile: mkfs set the times, the manifest has none
    fields = tuple(f for f in FIELDS if f != "mtime_ns") if name == "xfs-v4" else FIELDS
    compare(expected, host_manifest(out), tuple(f for f in fields if f != "nlink"))


def test_sparse_files_stay_sparse(tmp_path: Path, tmpfs, cpfromfs) -> None:
    need_root()
    image = unpack_image("ext4-basic.img", tmp_path)
    out = tmpfs(tmp_path / "out")
    cpfromfs("-i", image, "/sparse", "/prealloc", "/big.bin", out)
    st = os.stat(out / "sparse")
    assert st.st_size == 5_000_000
    assert st.st_blocks * 512 < 100_000, "the holes were written out"
    # preallocated (unwritten) space reads as zeros and is a hole to SEEK_DATA
    assert os.stat(out / "prealloc").st_blocks * 512 < 100_000
    assert os.stat(out / "big.bin").st_blocks * 512 >= 1_280_000


# -- a rich tree through mkfs.ext4 -d and an XFS filled by the host kernel ------------------------
@pytest.fixture(scope="module")
def rich_ext4(rich_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An ext4 image made by mkfs.ext4 -d from the rich tree, and the host's view of it."""
    need_tool("mkfs.ext4")
    tmp = tmp_path_factory.mktemp("rich-ext4")
    image = tmp / "rich.img"
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256", "-N", "12000", "-d", rich_tree, image,
        "64M")
    return image, reference(image, tmp)


def test_rich_tree_out_of_ext4(tmp_path: Path, tmpfs, cpfromfs, rich_ext4) -> None:
    """Every file type, owners, setuid/setgid/sticky, ns times before 1970 and after
    2038, xattrs of every namespace, ACLs, hard links (of a symlink too), sparse
    files, 255-byte and unicode names, 5,000 entries, 40 levels."""
    image, ref = rich_ext4
    out = tmpfs(tmp_path / "out")
    cpfromfs("-i", image, "/", out)
    compare(ref, host_manifest(out))
    assert os.stat(out / "sparse").st_blocks * 512 < 200_000


def test_rich_tree_out_of_xfs(tmp_path: Path, tmpfs, cpfromfs, rich_tree: Path) -> None:
    need_tool("mkfs.xfs")
    image = tmp_path / "rich-xfs.img"
    with open(image, "wb") as f:
        f.truncate(300 << 20)
    run("mkfs.xfs", "-q", "-f", image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", "-o", "loop", image, mnt)
    try:
        run("cp", "-a", "--preserve=all", f"{rich_tree}/.", mnt)
    finally:
        run("umount", mnt)
    ref = reference(image, tmp_path)
    out = tmpfs(tmp_path / "out")
    cpfromfs("-i", image, "/", out)
    compare(ref, host_manifest(out), tuple(f for f in FIELDS if f != "nlink"))


# -- the command line: sources, globs, destinations -------------------------------------------
@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ext4 image of a known tree (read-only for the tests: copy it to change it)."""
    need_tool("mkfs.ext4")
    tmp = tmp_path_factory.mktemp("small")
    src = tmp / "src"
    (src / "etc" / "conf.d").mkdir(parents=True)
    for n in ("a.conf", "b.conf", "c.txt", ".hidden.conf"):
        (src / "etc" / n).write_text(n)
    (src / "etc" / "conf.d" / "x").write_text("x")
    (src / "data").write_text("data\n")
    (src / "weird*name").write_text("literal star")
    os.symlink("etc", src / "etc-link")
    image = tmp / "small.img"
    run("mkfs.ext4", "-q", "-F", "-d", src, image, "16M")
    image.chmod(0o444)
    return image


def names(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def test_glob_in_the_last_component(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cpfromfs("-i", small_image, "/etc/*.conf", out)
    # matched inside the image, dot files included (as LKL's fnmatch without FNM_PERIOD)
    assert names(out) == [".hidden.conf", "a.conf", "b.conf"]
    out2 = tmp_path / "out2"
    out2.mkdir()
    cpfromfs("-i", small_image, "/etc/[bc]*", "/etc/conf.?", out2)
    assert names(out2) == ["b.conf", "c.txt", "conf.d"]
    assert (out2 / "conf.d" / "x").read_text() == "x"


def test_a_literal_name_wins_over_a_glob(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cpfromfs("-i", small_image, "/weird*name", out)
    assert names(out) == ["weird*name"]


def test_glob_without_match(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    proc = cpfromfs("-i", small_image, "/etc/*.nothing", tmp_path, check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "/etc/*.nothing" in err and "No such file" in err


def test_file_to_a_new_name(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    cpfromfs("-i", small_image, "/data", tmp_path / "renamed")
    assert (tmp_path / "renamed").read_text() == "data\n"


def test_directory_to_a_new_name(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    cpfromfs("-i", small_image, "/etc", tmp_path / "copy")
    assert names(tmp_path / "copy") == [".hidden.conf", "a.conf", "b.conf", "c.txt", "conf.d"]


def test_several_sources_into_a_directory(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    cpfromfs("-i", small_image, "/data", "etc/conf.d", "/etc-link", tmp_path)
    assert names(tmp_path) == ["conf.d", "data", "etc-link"]
    assert os.readlink(tmp_path / "etc-link") == "etc"  # a symlink stays one


def test_lkl_style_destination_slash(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    (tmp_path / "round-trip").mkdir()
    cpfromfs("-i", small_image, "/data", f"{tmp_path}/round-trip/")
    assert (tmp_path / "round-trip" / "data").read_text() == "data\n"


def test_contents_of_a_directory_with_dot(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cpfromfs("-i", small_image, "/etc/.", out)
    assert names(out) == [".hidden.conf", "a.conf", "b.conf", "c.txt", "conf.d"]


def test_missing_source_is_one_line(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    proc = cpfromfs("-i", small_image, "/data", "/nope", tmp_path, check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err == f"cpfromfs: {small_image}:/nope: No such file or directory\n"
    assert names(tmp_path) == [], "nothing is copied when a source is missing"


def test_several_sources_need_an_existing_directory(tmp_path: Path, cpfromfs,
                                                    small_image: Path) -> None:
    proc = cpfromfs("-i", small_image, "/data", "/etc", tmp_path / "missing", check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "missing" in err and "No such file or directory" in err
    (tmp_path / "file").write_text("")
    proc = cpfromfs("-i", small_image, "/data", "/etc", tmp_path / "file", check=False)
    assert proc.returncode == 1 and "Not a directory" in proc.stderr.decode()


def test_destination_parent_must_exist(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    proc = cpfromfs("-i", small_image, "/data", tmp_path / "no" / "such", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"cpfromfs: {tmp_path / 'no'}: No such file or directory\n"


def test_usage_errors(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    for args in (("-i", small_image, "/data"), ("/data", tmp_path),
                 ("-i", small_image, "--bogus", "/data", tmp_path),
                 ("-i", small_image, "-t", "ntfs", "/data", tmp_path),
                 ("-i", small_image, "--uid-map", "1:2:x", "/data", tmp_path)):
        proc = cpfromfs(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.decode().count("\n") == 1, proc.stderr


def test_missing_image_and_not_a_filesystem(tmp_path: Path, cpfromfs) -> None:
    proc = cpfromfs("-i", tmp_path / "nope.img", "/", tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"cpfromfs: {tmp_path / 'nope.img'}: No such file or directory\n"
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\x5a" * (1 << 20))
    proc = cpfromfs("-i", junk, "/", tmp_path, check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and str(junk) in err and "no ext2/ext3/ext4" in err


def test_merge_into_existing_directories(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    """Existing directories are merged (their other files kept); files are replaced by new
    ones, never written through: a hard link to an outside file keeps its content."""
    out = tmp_path / "out"
    (out / "etc" / "conf.d").mkdir(parents=True)
    (out / "etc" / "mine").write_text("kept")
    outside = tmp_path / "outside"
    outside.write_text("outside content")
    os.link(outside, out / "etc" / "a.conf")
    cpfromfs("-i", small_image, "/etc", out)
    assert (out / "etc" / "mine").read_text() == "kept"
    assert (out / "etc" / "a.conf").read_text() == "a.conf"
    assert outside.read_text() == "outside content"
    assert os.stat(outside).st_nlink == 1


def test_type_conflicts_are_errors(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    (tmp_path / "etc").write_text("a file where the image has a directory")
    proc = cpfromfs("-i", small_image, "/etc", tmp_path, check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and f"{tmp_path}/etc" in err and "non-directory" in err
    (tmp_path / "data").mkdir()
    proc = cpfromfs("-i", small_image, "/data", tmp_path, check=False)
    assert proc.returncode == 1 and "Is a directory" in proc.stderr.decode()


def test_verbose_lists_the_copies(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    proc = cpfromfs("-v", "-i", small_image, "/etc/conf.d", tmp_path)
    assert proc.stdout.decode().split() == [f"{tmp_path}/conf.d", f"{tmp_path}/conf.d/x"]


def test_started_as_cptofs_through_a_link(tmp_path: Path, small_image: Path) -> None:
    """LKL's cptofs behaves as cpfromfs when its name is cpfromfs (its test links it)."""
    import subprocess
    import sys

    script = tmp_path / "cptofs"
    script.write_text(f"#!{sys.executable}\nfrom fstools.cptofs.__main__ import cptofs_main\n"
                      "cptofs_main()\n")
    script.chmod(0o755)
    os.symlink(script, tmp_path / "cpfromfs")
    (tmp_path / "out").mkdir()
    proc = subprocess.run([tmp_path / "cpfromfs", "-i", small_image, "/data", tmp_path / "out"],
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "data").read_text() == "data\n"


def test_unprivileged_user(tmp_path: Path, cpfromfs, rich_ext4) -> None:
    """Without root: device nodes are skipped with one warning, trusted.* xattrs are
    reported, owners stay the user's; everything else is copied, exit status 0."""
    need_root()
    image, ref = rich_ext4
    # relative names from a working directory set before privileges drop: the
    # directories above (pytest's, /tmp) need not be open to the user
    tmp_path.chmod(0o755)
    os.link(image, tmp_path / "rich.img")
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 65534, 65534)
    proc = cpfromfs("-i", "rich.img", "/", "out", user=65534, check=False, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "device node skipped" in err and "trusted." in err
    got = host_manifest(out)
    assert "chr" not in got and "blk" not in got
    assert {e["uid"] for e in got.values()} == {65534}
    assert got["fifo"]["type"] == "fifo"
    assert got["big"]["type"] == "dir" and len(os.listdir(out / "big")) == 5000
    for p in ("small.txt", "suid", "sticky-dir", "deep"):
        assert got[p]["mtime_ns"] == ref[p]["mtime_ns"]
    assert got["sticky-dir"]["mode"] == 0o1777
    assert got["small.txt"]["xattrs"] == {"user.comment": ref["small.txt"]["xattrs"]["user.comment"]}
    assert got["hardlink"]["links"] == "dir/hardlink2"


def test_image_is_never_written(tmp_path: Path, cpfromfs) -> None:
    """A dirty journal is replayed in memory only (the image opens read-only)."""
    image = unpack_image("ext4-ext3.img", tmp_path)
    before = sha256_file(image)
    out = tmp_path / "out"
    out.mkdir()
    cpfromfs("-i", image, "/", out, check=False)
    assert sha256_file(image) == before


# -- crafted images: nothing may land outside DST ----------------------------------------------
def _all_paths(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


@pytest.fixture
def hostile_tree(tmp_path: Path) -> Path:
    """Symlinks pointing out of the image and chains of them, with directories and files
    behind names that a careless copier would resolve through them."""
    src = tmp_path / "hostile-src"
    src.mkdir()
    os.symlink("/etc", src / "evil")
    os.symlink("../../../../../../../../..", src / "up")
    os.symlink("/", src / "abs")
    os.symlink("evil", src / "chain1")
    os.symlink("chain1/passwd", src / "chain2")
    os.symlink("up/tmp", src / "chain3")
    (src / "d").mkdir()
    os.symlink("../up", src / "d" / "back")
    (src / "d" / "passwd").write_text("not the host's\n")
    return src


def _sentinel(tmp_path: Path) -> tuple[Path, set[str]]:
    """A directory beside DST whose contents must never change."""
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "keep").write_text("keep")
    return guard, _all_paths(tmp_path)


def test_hostile_symlinks_are_copied_not_followed(tmp_path: Path, cpfromfs,
                                                  hostile_tree: Path) -> None:
    need_tool("mkfs.ext4")
    image = tmp_path / "hostile.img"
    run("mkfs.ext4", "-q", "-F", "-d", hostile_tree, image, "8M")
    etc_before = sha256_file("/etc/passwd")
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    _sentinel(tmp_path / "work")
    cpfromfs("-i", image, "/", out)
    for n in ("evil", "up", "abs", "chain1", "chain2", "chain3", "d/back"):
        assert (out / n).is_symlink(), n
    assert os.readlink(out / "evil") == "/etc"
    assert (out / "d" / "passwd").read_text() == "not the host's\n"
    assert sha256_file("/etc/passwd") == etc_before
    assert _all_paths(tmp_path / "work" / "guard") == {"keep"}
    # sources through those links resolve inside the image (chrooted), never on the host
    for src in ("/evil/passwd", "/chain2", "/up/etc/passwd", "/abs/d/passwd", "/d/back/d/passwd"):
        out2 = tmp_path / "work" / "out2"
        shutil.rmtree(out2, ignore_errors=True)
        out2.mkdir()
        proc = cpfromfs("-i", image, src, out2, check=False)
        if src in ("/abs/d/passwd", "/d/back/d/passwd"):  # "/" and ".." are the image's root
            assert proc.returncode == 0 and (out2 / "passwd").read_text() == "not the host's\n"
        elif src == "/chain2":  # the symlink itself is copied
            assert proc.returncode == 0 and os.readlink(out2 / "chain2") == "chain1/passwd"
        else:
            assert proc.returncode == 1 and b"No such file" in proc.stderr
    assert sha256_file("/etc/passwd") == etc_before


def test_planted_symlinks_in_dst_are_not_followed(tmp_path: Path, cpfromfs,
                                                  small_image: Path) -> None:
    """DST already holds symlinks (from an earlier copy of a hostile image, say) at names
    the image uses: a file replaces the link, a directory is refused; nothing is written
    where the links point."""
    guard, _ = _sentinel(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(guard / "keep", out / "data")
    os.symlink(guard, out / "etc")
    proc = cpfromfs("--keep-going", "-i", small_image, "/data", "/etc", out, check=False)
    assert proc.returncode == 3
    assert "non-directory" in proc.stderr.decode()
    assert not (out / "data").is_symlink() and (out / "data").read_text() == "data\n"
    assert (guard / "keep").read_text() == "keep"
    assert _all_paths(guard) == {"keep"}


def _craft_names(image: Path, replacements: dict[bytes, bytes]) -> None:
    """Rewrite entry names in the root directory block (no metadata_csum, linear dirs)."""
    blocks = run("debugfs", "-R", "blocks /", image).stdout.split()
    data = bytearray(image.read_bytes())
    bs = 1024
    for blk in map(int, blocks):
        block = data[blk * bs:(blk + 1) * bs]
        for old, new in replacements.items():
            assert len(old) == len(new)
            block = block.replace(old, new)
        data[blk * bs:(blk + 1) * bs] = block
    image.write_bytes(bytes(data))


def test_names_holding_slashes_or_dots_are_refused(tmp_path: Path, cpfromfs) -> None:
    """Directory entries edited to read '../../escape', '/tmp-abs', '..', '.': no write
    outside DST; the bad names are reported, the rest is copied."""
    need_tool("mkfs.ext4", "debugfs")
    src = tmp_path / "src"
    src.mkdir()
    placeholders = {b"PPPPPPescape": b"../../escape", b"QQQQQQQQQabs": b"/tmp-cptofsx",
                    b"RR": b"..", b"S": b"."}
    for old in placeholders:
        (src / old.decode()).write_text("payload")
    (src / "fine").write_text("fine")
    image = tmp_path / "crafted.img"
    run("mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "^metadata_csum,^dir_index", "-d", src,
        image, "4M")
    _craft_names(image, placeholders)
    work = tmp_path / "work"
    out = work / "a" / "b" / "out"
    out.mkdir(parents=True)
    before = _all_paths(tmp_path)
    proc = cpfromfs("--keep-going", "-i", image, "/", out, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert "invalid file name" in err and "Traceback" not in err
    assert sorted(os.listdir(out)) == ["fine", "lost+found"]
    after = _all_paths(tmp_path)
    assert {p for p in after - before if not p.startswith("work/a/b/out/")} == set()
    assert not Path("/tmp-cptofsx").exists()
    # without --keep-going the first bad name stops the copy with one line
    shutil.rmtree(out)
    out.mkdir()
    proc = cpfromfs("-i", image, "/", out, check=False)
    assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1


def test_directory_loops_end(tmp_path: Path, cpfromfs) -> None:
    """A directory hard-linked below itself (debugfs allows it) is copied once."""
    need_tool("mkfs.ext4", "debugfs")
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_text("f")
    image = tmp_path / "loop.img"
    run("mkfs.ext4", "-q", "-F", "-O", "^metadata_csum", "-d", src, image, "8M")
    run("debugfs", "-w", "-R", "ln /a /a/b/loop", image)
    out = tmp_path / "out"
    out.mkdir()
    proc = cpfromfs("-i", image, "/a", out, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "already copied" in err
    assert (out / "a" / "b" / "f").read_text() == "f"
    assert not (out / "a" / "b" / "loop").exists()


def test_owner_options_and_maps(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    need_root()
    out = tmp_path / "o"
    out.mkdir()
    cpfromfs("-o", "123", "-g", "456", "-i", small_image, "/etc", out)
    assert {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in out.rglob("*")} == {(123, 456)}
    out2 = tmp_path / "m"
    out2.mkdir()
    cpfromfs("--uid-map", "0:5000:10", "--gid-map", "0:7000", "-i", small_image, "/etc", out2)
    assert {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in out2.rglob("*")} == {(5000, 7000)}



# -- partitions, progress, other filesystems -------------------------------------------------
def _partitioned(tmp: Path, label: str) -> Path:
    """A 64 MiB disk with ext4 in partitions 1 and 2 (24 MiB each)."""
    need_tool("sfdisk", "mkfs.ext4")
    disk = tmp / f"{label}.img"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    run("sfdisk", "-q", disk,
        input=f"label: {label}\nstart=2048, size=49152\nstart=51200, size=49152\n")
    for n, start in ((1, 2048), (2, 51200)):
        src = tmp / f"tree{n}"
        src.mkdir()
        (src / f"in-partition-{n}").write_text(f"partition {n}\n")
        run("mkfs.ext4", "-q", "-F", "-E", f"offset={start * 512}", "-d", src, disk, "24M")
    return disk


@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_partition_choice(tmp_path: Path, cpfromfs, label: str) -> None:
    disk = _partitioned(tmp_path, label)
    out = tmp_path / "out"
    out.mkdir()
    proc = cpfromfs("-i", disk, "/", out, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and "several partitions" in err
    cpfromfs("-P", "2", "-i", disk, "/in-partition-2", out)
    assert (out / "in-partition-2").read_text() == "partition 2\n"
    proc = cpfromfs("-P", "7", "-i", disk, "/", out, check=False)
    assert proc.returncode == 1 and "no partition 7" in proc.stderr.decode()


def test_progress_on_request(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    """--progress draws on stderr (a terminal by default); the result is the same."""
    proc = cpfromfs("--progress", "-i", small_image, "/", tmp_path)
    assert b"\r\x1b[K" in proc.stderr
    assert (tmp_path / "etc" / "a.conf").read_text() == "a.conf"


# btrfs joins as soon as its images are committed (never an empty list: that would skip)
OTHER_IMAGES = ["ext4-features"] + [name.removesuffix(".img.zst") for name in sorted(
    p.name for p in IMAGES.glob("btrfs-*.img.zst"))]


@pytest.mark.parametrize("name", OTHER_IMAGES)
def test_other_images_against_the_host(tmp_path: Path, tmpfs, cpfromfs, name: str) -> None:
    """Any image against the host kernel's view of it (btrfs once its images exist)."""
    image = unpack_image(f"{name}.img", tmp_path)
    ref = reference(image, tmp_path)
    out = tmpfs(tmp_path / "out")
    proc = cpfromfs("-i", image, "/", out)
    # btrfs properties (btrfs.compression) exist only on btrfs: reported, not copied
    props = {n for e in ref.values() for n in e["xattrs"] if n.startswith("btrfs.")}
    for e in ref.values():
        e["xattrs"] = {n: v for n, v in e["xattrs"].items() if not n.startswith("btrfs.")}
    if props:
        assert b"extended attribute btrfs." in proc.stderr, proc.stderr
    compare(ref, host_manifest(out), tuple(f for f in FIELDS if f != "nlink"))


def test_kernel_log_with_p(tmp_path: Path, cpfromfs, small_image: Path) -> None:
    """-p shows the kernel's messages (LKL's printk switch); without it they stay quiet."""
    quiet = cpfromfs("-i", small_image, "/data", tmp_path / "a")
    assert b"[kernel]" not in quiet.stderr
    loud = cpfromfs("-p", "-i", small_image, "/data", tmp_path / "b")
    assert b"[kernel]" in loud.stderr and b"mounted" in loud.stderr
