"""The copy engine in process: host -> kernel -> host through the two endpoints.

The kernel's ramfs (its root filesystem, always writable) stands in for a
writable image here, so the copy-in direction is exercised whatever driver
can write; test_cptofs.py does the same through real images.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import need_root, unpack_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treeutil import diff_manifests, host_manifest, kernel_manifest, project

from fstools.common.image import open_image
from fstools.cptofs.copy import Copier, IdMap, Options, PathError, Stats, resolve_sources
from fstools.cptofs.endpoint import HostEndpoint, ImageEndpoint, ReadAheadHost
from fstools.cptofs.readahead import DEPTH, MAX_DATA, SEND_BUFFER, ReadAhead
from kernel import Kernel

FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "mtime_ns", "target", "rdev", "xattrs",
          "links", "nlink")


def without_sockets(m: dict) -> dict:
    return {p: e for p, e in m.items() if e["type"] != "sock"}


def same(a: dict, b: dict, fields: tuple[str, ...] = FIELDS) -> None:
    diff = diff_manifests(project(without_sockets(a), fields), project(without_sockets(b), fields))
    assert not diff, "\n".join(diff)


@pytest.fixture
def ramfs() -> Iterator[tuple[Kernel, ImageEndpoint]]:
    """A kernel whose /work (ramfs) is the 'image', the endpoint chrooted into it."""
    k = Kernel(mb=32)
    k.sys.mkdir("/work", 0o755)
    img = ImageEndpoint(k.sys, "/work")
    try:
        yield k, img
    finally:
        img.finish()
        k.halt()


def copy(src, dst, sources: list[bytes], dest: bytes, **kw) -> tuple[Stats, list[str]]:
    warnings: list[str] = []
    opts = kw.pop("options", None)
    c = Copier(src, dst, opts, warn=warnings.append, **kw)
    old = os.umask(0)
    try:
        return c.run(resolve_sources(src, sources), dest), warnings
    finally:
        os.umask(old)


@pytest.mark.parametrize("read_ahead", [False, True], ids=["direct", "read-ahead"])
def test_round_trip_through_the_kernel(rich_tree: Path, ramfs, tmpfs, tmp_path: Path,
                                       read_ahead: bool) -> None:
    """The rich tree in and out again: every field equal (sockets left out, with a warning);
    the same with the source read ahead by a helper process (as cptofs does), which then
    answered for (nearly) every entry."""
    k, img = ramfs
    host = ReadAheadHost() if read_ahead else HostEndpoint()
    stats, warnings = copy(host, img, [os.fsencode(rich_tree) + b"/."], b"/")
    if read_ahead:
        assert isinstance(host, ReadAheadHost) and host.answered > stats.files
    assert warnings == [f"{rich_tree}/socket: socket skipped (sockets cannot be copied)"]
    src = host_manifest(rich_tree)
    same(src, kernel_manifest(k.sys, "/"))  # the task is chrooted into /work
    out = tmpfs(tmp_path / "out")
    copy(img, host, [b"/"], os.fsencode(out))
    same(src, host_manifest(out))
    # (ramfs keeps no holes; sparseness is checked through real images and below)


class Recording:
    """An endpoint wrapper that records the writes made through it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.writes: list[tuple[int, int]] = []
        self.truncates: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def pwrite(self, fd: int, data, offset: int) -> int:
        self.writes.append((offset, len(data)))
        return self.inner.pwrite(fd, data, offset)

    def ftruncate(self, fd: int, size: int) -> None:
        self.truncates.append(size)
        self.inner.ftruncate(fd, size)


def test_sparse_copy_in_writes_only_the_data(tmp_path: Path, ramfs) -> None:
    k, img = ramfs
    f = tmp_path / "sparse"
    with open(f, "wb") as fh:
        fh.seek(1 << 20)
        fh.write(b"A" * 5000)
        fh.seek(8 << 20)
        fh.write(b"B" * 10)
        fh.truncate(20 << 20)
    rec = Recording(img)
    copy(HostEndpoint(), rec, [os.fsencode(f)], b"/")
    assert sum(n for _off, n in rec.writes) < 64 << 10
    assert {off >> 20 for off, _n in rec.writes} == {1, 8}
    assert rec.truncates == [20 << 20]
    fd = k.sys.open("/sparse", 0)
    try:
        assert k.sys.pread64(fd, 5000, 1 << 20) == b"A" * 5000
        assert k.sys.pread64(fd, 16, (8 << 20) - 6) == bytes(6) + b"B" * 10
        assert k.sys.fstat(fd).st_size == 20 << 20
    finally:
        k.sys.close(fd)


def test_hard_links_use_a_dictionary(tmp_path: Path, ramfs) -> None:
    """3,000 names of one inode spread over directories become 3,000 links (one inode)."""
    k, img = ramfs
    src = tmp_path / "links"
    src.mkdir()
    (src / "target").write_text("x")
    for d in range(3):
        (src / f"d{d}").mkdir()
        for i in range(1000):
            os.link(src / "target", src / f"d{d}" / f"l{i}")
    stats, _ = copy(HostEndpoint(), img, [os.fsencode(src)], b"/")
    st = k.sys.lstat("/links/target")
    assert st.st_nlink == 3001
    assert k.sys.lstat("/links/d2/l999").st_ino == st.st_ino


def test_merge_replace_and_owners(tmp_path: Path, ramfs) -> None:
    k, img = ramfs
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "new").write_text("new")
    (src / "d" / "file").write_text("replacement")
    k.sys.mkdir("/d", 0o700)
    fd = k.sys.open("/d/old", os.O_CREAT | os.O_WRONLY, 0o644)
    k.sys.close(fd)
    fd = k.sys.open("/d/file", os.O_CREAT | os.O_WRONLY, 0o644)
    k.sys.write(fd, b"old content that is longer")
    k.sys.close(fd)
    k.sys.symlink("/d/old", "/d/new")  # a symlink where a file comes: replaced, not followed
    opts = Options(owner=77, group=88, selinux=b"system_u:object_r:tmp_t:s0\0")
    copy(HostEndpoint(), img, [os.fsencode(src / "d")], b"/", options=opts)
    names = sorted(d.d_name for d in _readdir(k, "/d"))
    assert names == [b"file", b"new", b"old"]
    assert _read(k, "/d/file") == b"replacement"
    assert _read(k, "/d/new") == b"new"
    assert _read(k, "/d/old") == b""
    st = k.sys.lstat("/d/new")
    assert (st.st_uid, st.st_gid) == (77, 88)
    assert k.sys.lgetxattr("/d/new", "security.selinux") == b"system_u:object_r:tmp_t:s0\0"
    assert k.sys.lgetxattr("/d", "security.selinux") == b"system_u:object_r:tmp_t:s0\0"
    assert k.sys.lstat("/d").st_mode & 0o7777 == os.stat(src / "d").st_mode & 0o7777


def test_id_maps() -> None:
    m = IdMap.parse(["0:100000:65536", "70000:5"])
    assert m(0) == 100000 and m(65535) == 165535 and m(65536) == 65536 and m(70000) == 5
    for bad in ("1", "a:b", "1:2:0", "1:2:3:4", "4294967295:0:2"):
        with pytest.raises(ValueError):
            IdMap.parse([bad])


def test_inherited_default_acl_is_removed(tmp_path: Path, ramfs) -> None:
    """A destination directory with a default ACL: the copies get exactly the source's
    xattrs, not the inherited ACL."""
    k, img = ramfs
    need_root()
    default = bytes.fromhex("02000000" "0100070000000000" "0400050000000000" "2000000000000000")
    k.sys.setxattr("/", "system.posix_acl_default", default)
    (tmp_path / "plain").write_text("no acl")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside").write_text("no acl either")
    copy(HostEndpoint(), img, [os.fsencode(tmp_path / "plain"), os.fsencode(tmp_path / "dir")],
         b"/")
    assert k.sys.llistxattr("/plain") == []
    assert k.sys.llistxattr("/dir") == []  # (and so its contents were made in a plain one)
    assert k.sys.llistxattr("/dir/inside") == []


def test_read_only_destination_is_one_error(tmp_path: Path) -> None:
    """EROFS from a read-only mount names the file in the image and stops the copy."""
    image = unpack_image("ext4-basic.img", tmp_path)
    (tmp_path / "f").write_text("x")
    with open_image(os.fspath(image), readonly=True, prog="test") as m:
        img = ImageEndpoint(m.sys, m.root)
        try:
            c = Copier(HostEndpoint(), img, Options(keep_going=True), dst_prefix="img:")
            with pytest.raises(PathError) as ei:
                c.run(resolve_sources(HostEndpoint(), [os.fsencode(tmp_path / "f")]), b"/dir")
        finally:
            img.finish()
    e = ei.value
    assert e.errno == errno.EROFS and e.filename == "img:/dir/f" and e.dest


def test_keep_going_skips_unreadable_files(tmp_path: Path, ramfs) -> None:
    """An unreadable source (as a user) is reported and left out; the rest is copied."""
    k, img = ramfs
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    (src / "b").write_text("b")

    class Failing(HostEndpoint):
        def open_read(self, dfd: int, name: bytes) -> int:
            if name == b"a":
                raise PermissionError(errno.EACCES, "Permission denied")
            return super().open_read(dfd, name)

    stats, warnings = copy(Failing(), img, [os.fsencode(src)], b"/",
                           options=Options(keep_going=True))
    assert stats.skipped == [f"{src}/a"]
    assert warnings == [f"{src}/a: Permission denied; skipped"]
    assert sorted(d.d_name for d in _readdir(k, "/src")) == [b"b"]
    with pytest.raises(PathError) as ei:
        copy(Failing(), img, [os.fsencode(src)], b"/")
    assert ei.value.filename == f"{src}/a"


class CountingDirs:
    """An endpoint wrapper counting the directory descriptors it holds open at once."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.dirs: set[int] = set()
        self.most = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _opened(self, fd: int) -> int:
        self.dirs.add(fd)
        self.most = max(self.most, len(self.dirs))
        return fd

    def open_dir(self, path: bytes) -> int:
        return self._opened(self.inner.open_dir(path))

    def opendir_at(self, dfd: int, name: bytes) -> int:
        return self._opened(self.inner.opendir_at(dfd, name))

    def close(self, fd: int) -> None:
        self.dirs.discard(fd)
        self.inner.close(fd)


def _deep_tree(root: Path, depth: int) -> None:
    """``depth`` nested directories, each with a file and a side directory (so the walk
    comes back to every level and goes down again), a hard link across 100 levels."""
    d = root
    for i in range(depth):
        d = d / f"d{i}"
        d.mkdir(parents=True)
        (d / "f").write_text(str(i))
        (d / "side").mkdir()
        (d / "side" / "g").write_text(str(i))
        os.chmod(d, 0o750 if i % 2 else 0o755)
        if i == 10:
            linked = d / "f"
        if i == 110:
            os.link(linked, d / "link")
    for i, p in enumerate(sorted(root.rglob("*"), reverse=True)):
        os.utime(p, ns=(1_000_000_000 + i, 1_500_000_000_000_000_000 + i * 1000),
                 follow_symlinks=False)


def test_deep_tree_with_few_descriptors(tmp_path: Path, ramfs, tmpfs) -> None:
    """A tree far deeper than KEEP_OPEN goes in and out with at most KEEP_OPEN (and a few)
    directories open on either side at once: a tree deeper than a process's descriptor
    limit copies as cp -a copies it. Modes, times and the hard link are kept."""
    from fstools.cptofs.copy import KEEP_OPEN

    k, img = ramfs
    src = tmp_path / "deep"
    _deep_tree(src, 3 * KEEP_OPEN)
    host, image = CountingDirs(HostEndpoint()), CountingDirs(img)
    copy(host, image, [os.fsencode(src)], b"/")
    assert host.most <= KEEP_OPEN + 3 and image.most <= KEEP_OPEN + 3, (host.most, image.most)
    assert not host.dirs
    same(host_manifest(src), kernel_manifest(k.sys, "/deep"))
    out = tmpfs(tmp_path / "out")
    host, image = CountingDirs(HostEndpoint()), CountingDirs(img)
    copy(image, host, [b"/deep"], os.fsencode(out))
    assert host.most <= KEEP_OPEN + 3 and image.most <= KEEP_OPEN + 3, (host.most, image.most)
    same(host_manifest(src), host_manifest(out / "deep"))


@pytest.mark.parametrize("replace_parent", [False, True])
def test_directories_moved_while_their_descriptors_were_closed(tmp_path: Path, ramfs,
                                                               replace_parent: bool) -> None:
    """A directory moved away while the walk is deep inside it, below the descriptors
    kept open: its parent, closed meanwhile, is found again by name and the rest of it
    copied. When the parent was replaced by another directory too, that is found out: the
    parent's remaining entries are reported and left out, not taken from the wrong place."""
    from fstools.cptofs.copy import KEEP_OPEN

    k, img = ramfs
    src = tmp_path / "deep"
    _deep_tree(src, 2 * KEEP_OPEN + 10)
    (tmp_path / "elsewhere").mkdir()
    victim = src / "d0" / "d1" / "d2" / "d3" / "d4"
    parent = victim.parent
    victim_st = os.stat(victim)

    class Moving(HostEndpoint):
        def listdir(self, dfd: int) -> list[bytes]:
            names = super().listdir(dfd)
            if os.path.samestat(os.fstat(dfd), victim_st):
                os.rename(victim, tmp_path / "elsewhere" / "moved")
                if replace_parent:
                    os.rename(parent, tmp_path / "elsewhere" / "parent")
                    parent.mkdir()
                    (parent / "impostor").write_text("no")
            return names

    stats, warnings = copy(Moving(), img, [os.fsencode(src)], b"/",
                           options=Options(keep_going=True))
    kparent = "/deep/d0/d1/d2/d3"
    names = sorted(d.d_name for d in _readdir(k, kparent))
    if replace_parent:
        assert warnings == [f"{parent}: directory moved while it was copied; skipped"]
        assert stats.skipped == [os.fsdecode(parent)]
        assert names == [b"d4"]  # what came before the moved directory, nothing after
    else:
        assert warnings == [] and stats.skipped == []
        assert names == [b"d4", b"f", b"side"]
        assert _read(k, kparent + "/f") == b"3"
    # the moved directory's subtree was copied whole
    deepest = kparent + "".join(f"/d{i}" for i in range(4, 2 * KEEP_OPEN + 10))
    assert _read(k, deepest + "/f") == str(2 * KEEP_OPEN + 9).encode()


def _readdir(k: Kernel, path: str):
    fd = k.sys.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [d for d in k.sys.getdents64(fd) if d.d_name not in (b".", b"..")]
    finally:
        k.sys.close(fd)


def _read(k: Kernel, path: str) -> bytes:
    fd = k.sys.open(path, os.O_RDONLY)
    try:
        return k.sys.read(fd, 1 << 20)
    finally:
        k.sys.close(fd)


# -- random trees ---------------------------------------------------------------------------------
_names = st.binary(min_size=1, max_size=40).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b".."))
_times = st.integers(min_value=-(2**33), max_value=2**34 - 1).map(lambda s: s * 1_000_000_007 % 2**62)
_leaf = st.one_of(
    st.tuples(st.just("file"), st.binary(max_size=3000), st.integers(0, 0o7777), _times),
    st.tuples(st.just("link"), st.binary(min_size=1, max_size=100).filter(lambda t: b"\0" not in t),
              st.just(0o777), _times),
    st.tuples(st.just("fifo"), st.just(b""), st.integers(0, 0o7777), _times),
)
_trees = st.recursive(
    _leaf,
    lambda kids: st.tuples(st.just("dir"), st.dictionaries(_names, kids, max_size=6),
                           st.integers(0o700, 0o7777), _times),
    max_leaves=25)


def _build(path: bytes, node) -> None:
    kind, payload, mode, t = node
    if kind == "dir":
        os.mkdir(path, 0o700)
        for name, child in payload.items():
            _build(path + b"/" + name, child)
    elif kind == "file":
        with open(path, "wb") as f:
            f.write(payload)
    elif kind == "link":
        os.symlink(payload, path)
    else:
        os.mkfifo(path)
    if kind != "link":
        os.chmod(path, mode)
    os.utime(path, ns=(t, t // 3), follow_symlinks=False)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.tuples(st.just("dir"), st.dictionaries(_names, _trees, min_size=1, max_size=6),
                      st.just(0o755), _times))
def test_random_trees_round_trip(tmp_path: Path, tree) -> None:
    """Any names (any bytes but '/' and NUL), modes, times, files, symlinks and fifos come
    back unchanged through the kernel."""
    need_root()
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    src = os.fsencode(work / "src")
    _build(src, tree)
    k = Kernel(mb=16)
    try:
        k.sys.mkdir("/work", 0o755)
        img = ImageEndpoint(k.sys, "/work")
        copy(HostEndpoint(), img, [src], b"/")
        out = work / "out"
        out.mkdir()
        copy(img, HostEndpoint(), [b"/src"], os.fsencode(out))
        img.finish()
    finally:
        k.halt()
    same(host_manifest(os.fsdecode(src)), host_manifest(out / "src"))


def test_read_ahead_answers_only_what_the_host_would(tmp_path: Path, ramfs) -> None:
    """What the helper reads ahead is what the engine would have read: a small sparse file
    keeps its holes (only its data is written), a file over MAX_DATA and a tree deeper
    than the helper goes are read by the engine itself, and the copy is whole."""
    k, img = ramfs
    holey = tmp_path / "holey"
    holey.mkdir()
    with open(holey / "sparse", "wb") as f:
        f.seek(200_000)
        f.write(b"data in the middle" * 100)
        f.truncate(900_000)
    host = ReadAheadHost()
    rec = Recording(img)
    copy(host, rec, [os.fsencode(holey)], b"/")
    assert host.answered == 2
    assert rec.writes and all(off <= 200_000 and off + n >= 201_800 and n < 64 << 10
                              for off, n in rec.writes), rec.writes
    assert rec.truncates == [900_000]
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(MAX_DATA + 4097))
    (src / "x").write_bytes(b"with an attribute")
    os.setxattr(src / "x", "user.note", b"kept")
    os.symlink("x", src / "link")
    p = src / "deep"
    for i in range(DEPTH + 6):
        p = p / f"d{i}"
    p.mkdir(parents=True)
    (p / "bottom").write_text("at the bottom\n")
    entries = 1 + sum(len(d) + len(f) for _p, d, f in os.walk(src))
    host = ReadAheadHost()
    copy(host, img, [os.fsencode(src)], b"/")
    same(host_manifest(src), kernel_manifest(k.sys, "/src"))
    # all but the entries below DEPTH
    assert entries - 10 <= host.answered < entries, (host.answered, entries)


def test_read_ahead_reads_are_the_hosts(tmp_path: Path) -> None:
    """Reads answered from the helper's stream give the host's bytes at any offset and
    length inside a data region (one message carries many files' data after its records)
    and the same regions; the copy engine reads whole regions, other callers need not."""
    src = tmp_path / "src"
    src.mkdir()
    bodies = {}
    for i in range(5):
        with open(src / f"f{i}", "wb") as f:
            f.write(os.urandom(3000 + i))
            f.seek(150_000 * (i + 1))  # a hole, then a second region (under MAX_DATA)
            f.write(os.urandom(70_000 + i))
        bodies[f"f{i}".encode()] = (src / f"f{i}").read_bytes()
    host = ReadAheadHost()
    dfd = host.open_dir(os.fsencode(tmp_path))
    try:
        host.begin_walk(dfd, b"src")  # as the engine walks: the source, then its entries
        host.lstat_at(dfd, b"src")
        sub = host.opendir_at(dfd, b"src")
        for name, body in sorted(bodies.items()):
            st = host.lstat_at(sub, name)
            fd = host.open_read(sub, name)
            assert fd < 0  # answered from the stream
            real = os.open(src / os.fsdecode(name), os.O_RDONLY)
            try:
                assert list(host.data_regions(fd, st.st_size)) == \
                    list(HostEndpoint().data_regions(real, st.st_size))
            finally:
                os.close(real)
            for start, stop in host.data_regions(fd, st.st_size):
                for offset, count in ((start, stop - start), (start + 17, 1000),
                                      (stop - 5, 100), (start + 1, stop - start - 1)):
                    got = host.pread(fd, count, offset)
                    assert bytes(got) == body[offset:min(offset + count, stop)], (name, offset)
            host.close(fd)
        host.close(sub)
        assert host._ahead is not None and host._ahead.answered == len(bodies) + 1
    finally:
        host.end_walk()
        os.close(dfd)


def test_copy_goes_on_when_the_read_ahead_helper_dies(tmp_path: Path, ramfs) -> None:
    """The helper killed in the middle of a walk: the engine reads the rest itself."""
    k, img = ramfs
    src = tmp_path / "many"
    src.mkdir()
    for i in range(1500):
        (src / f"f{i:04d}").write_bytes(os.urandom(3000))

    class Dying(ReadAheadHost):
        seen = 0

        def lstat_at(self, dfd: int, name: bytes):
            self.seen += 1
            if self.seen == 50 and self._ahead is not None:
                self._ahead.proc.kill()
                self._ahead.proc.wait()
            return super().lstat_at(dfd, name)

    host = Dying()
    copy(host, img, [os.fsencode(src)], b"/")
    same(host_manifest(src), kernel_manifest(k.sys, "/many"))
    assert 50 <= host.answered < 1000, host.answered


def test_read_ahead_gets_a_long_lead_as_root(tmp_path: Path) -> None:
    """Root's helper may read SEND_BUFFER ahead (past net.core.wmem_max): with a socket's
    default of about 200 KB the copy caught up with it at every stretch of big files."""
    need_root()
    src = tmp_path / "big"
    src.mkdir()
    for i in range(12):
        (src / f"f{i:02d}").write_bytes(os.urandom(MAX_DATA))
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    ahead = ReadAhead(dfd, b"big")
    try:
        queued, deadline = 0, time.monotonic() + 20
        while time.monotonic() < deadline:  # until the helper is as far ahead as it may be
            time.sleep(0.2)
            now = struct.unpack("i", fcntl.ioctl(ahead.sock, termios.FIONREAD, b"\0" * 4))[0]
            if now == queued and now:
                break
            queued = now
        assert queued > 4 << 20, queued
        assert queued <= SEND_BUFFER * 2
    finally:
        ahead.close()
        os.close(dfd)


def test_owner_of_new_files_is_known_per_directory(tmp_path: Path, ramfs) -> None:
    """Where a new file or symlink already has the owner wanted, no chown is made; what
    owner a new file gets is learned once per destination directory: in an existing setgid directory
    it is the directory's group, elsewhere the copier's, and the copies all end up with
    their source's owner."""
    k, img = ramfs
    k.sys.mkdir("/sg", 0o755)  # (the task is chrooted into /work)
    k.sys.chown("/sg", 0, 55)
    k.sys.chmod("/sg", 0o2775)
    src = tmp_path / "src"
    for d in ("plain", "sg"):
        (src / d).mkdir(parents=True)
        for n in ("a", "b"):
            (src / d / n).write_text(n)
        os.symlink("a", src / d / "l")
    os.chown(src / "sg" / "b", 7, 55)
    (src / "sg" / "private").mkdir(mode=0o700)  # made in sg: it gets sg's setgid bit too

    class Counting(ImageEndpoint):
        chowns = 0

        def chown_at(self, dfd: int, name: bytes, uid: int, gid: int) -> None:
            Counting.chowns += 1
            super().chown_at(dfd, name, uid, gid)

    img.__class__ = Counting
    copy(HostEndpoint(), img, [os.fsencode(src) + b"/."], b"/")
    for path, owner in (("plain/a", (0, 0)), ("plain/b", (0, 0)), ("plain/l", (0, 0)),
                        ("sg/a", (0, 0)), ("sg/b", (7, 55)), ("sg/l", (0, 0))):
        st = k.sys.lstat(f"/{path}")
        assert (st.st_uid, st.st_gid) == owner, path
    assert k.sys.lstat("/sg/private").st_mode == 0o40700  # the source's mode, exactly
    # sg/a, sg/b, sg/l and sg/private (which got group 55, not 0), sg and the base (not
    # made by the copy); not plain, made with the owner wanted
    assert Counting.chowns == 6, Counting.chowns
