#!/usr/bin/env python3
"""Build the XFS test images with the real mkfs.xfs (run as root).

Each image is made by ``mkfs.xfs`` on a sparse 300 MiB file, populated
through the host kernel's loop mount (or, for V4, which current kernels no
longer mount, through an mkfs protofile), then described by a JSON manifest
taken from a read-only loop mount (``tests/treeutil.host_manifest``) or from
the source tree. ``<name>.meta.json`` records what ``xfs_db`` says about
chosen inodes (fork formats, extent counts), so tests know the images cover
every format. Images are written as ``tests/images/xfs-*.img.zst``.

    sudo .venv/bin/python tests/images/make_xfs.py [name...]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import treeutil  # noqa: E402

SIZE = 300 << 20
ENV = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def sh(*cmd: str | os.PathLike[str], **kw: object) -> str:
    return subprocess.run([os.fspath(c) for c in cmd], check=True, text=True, capture_output=True,
                          env=ENV, **kw).stdout  # type: ignore[call-overload, no-any-return]


def pattern(seed: str, size: int) -> bytes:
    """Deterministic bytes: compressible blocks stamped with their index and seed."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += (f"{seed}:{i:08d}:".encode() * 64)[:512]
        i += 1
    return bytes(out[:size])


def noise(seed: str, size: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


@contextlib.contextmanager
def loop_mount(img: Path, opts: str = "") -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="xfsimg-"))
    sh("mount", "-o", "loop" + ("," + opts if opts else ""), img, mnt)
    try:
        yield mnt
    finally:
        sh("umount", mnt)
        mnt.rmdir()


def mkfs(img: Path, *args: str, size: int = SIZE) -> None:
    img.unlink(missing_ok=True)
    with open(img, "wb") as f:
        f.truncate(size)
    sh("mkfs.xfs", "-q", "-f", *args, img)


def compress(img: Path, out: Path) -> None:
    sh("zstd", "-q", "-f", "-19", "--sparse", img, "-o", out)


def xfs_db(img: Path, *cmds: str) -> str:
    args: list[str] = []
    for c in cmds:
        args += ["-c", c]
    return sh("xfs_db", "-r", *args, img)


def inode_meta(img: Path, mnt_inos: dict[str, int]) -> dict[str, dict[str, object]]:
    """xfs_db's view of chosen inodes: fork formats and extent counts."""
    meta: dict[str, dict[str, object]] = {}
    for rel, ino in mnt_inos.items():
        out = xfs_db(img, f"inode {ino}", "print core.format core.aformat core.nextents "
                     "core.naextents")
        fields = dict(re.findall(r"^core\.(\w+) = (\S+)", out, re.M))
        meta[rel] = {"ino": ino, **fields}
    return meta


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- tree builders --------------------------------------------------------------------------
def populate_main(root: Path) -> list[str]:
    """Every file type and format; returns paths whose inodes the meta file describes."""
    (root / "empty").write_bytes(b"")
    write(root / "small.txt", b"hello, xfs\n")
    write(root / "block.bin", pattern("block", 4096))
    write(root / "odd.bin", noise("odd", 70001))
    write(root / "big.bin", pattern("big", 3 << 20))
    os.chmod(root / "small.txt", 0o640)
    os.chown(root / "small.txt", 1000, 100)
    # holes: data, a hole, data, and a hole up to the end
    with open(root / "sparse.bin", "wb") as f:
        f.write(pattern("s1", 8192))
        f.seek(1 << 20)
        f.write(pattern("s2", 5000))
        f.truncate(4 << 20)
    # unwritten extents: preallocated, partly written; reads must be zeros around the data
    with open(root / "prealloc.bin", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 1 << 20)
        f.seek(300000)
        f.write(pattern("pre", 10000))
    with open(root / "prealloc-tail.bin", "wb") as f:
        f.write(b"x" * 100)
        os.fsync(f.fileno())
        sh("xfs_io", "-c", "falloc -k 0 2m", root / "prealloc-tail.bin")
    # thousands of extents: one block every other block (btree data fork)
    with open(root / "fragmented.bin", "wb") as f:
        for i in range(3000):
            f.seek(i * 8192)
            f.write(pattern(f"frag{i}", 4096))
    # reflinked copies share extents
    sh("cp", "--reflink=always", root / "big.bin", root / "big-reflink.bin")
    sh("cp", "--reflink=always", root / "fragmented.bin", root / "fragmented-reflink.bin")
    with open(root / "big-reflink.bin", "r+b") as f:
        f.seek(1 << 20)
        f.write(b"CHANGED" * 100)
    # directories of every size
    d = root / "dirs"
    for name, n in (("sf", 5), ("block", 60), ("leaf", 300), ("node", 2500)):
        sub = d / name
        sub.mkdir(parents=True)
        for i in range(n):
            nm = f"e{i:05d}" + "x" * (i % 23)
            if i % 7 == 0:
                write(sub / nm, f"{name} {i}\n".encode())
            else:
                (sub / nm).touch()
    (d / "sf" / "subdir").mkdir()
    (d / "empty").mkdir()
    # links and special files
    ln = root / "links"
    ln.mkdir()
    os.symlink("../small.txt", ln / "short")
    os.symlink("/" + "/".join(f"component{i:03d}" for i in range(70)), ln / "long")
    os.symlink("x" * 1023, ln / "max")
    os.link(root / "small.txt", ln / "hard")
    dev = root / "dev"
    dev.mkdir()
    os.mknod(dev / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(dev / "sda9", 0o660 | 0o060000, os.makedev(8, 9))
    os.mknod(dev / "bigdev", 0o600 | 0o020000, os.makedev(259, 65000))
    os.mkfifo(dev / "fifo", 0o644)
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.fspath(dev / "sock"))
    s.close()
    # attributes in every format and namespace
    x = root / "xattrs"
    x.mkdir()
    (x / "sf").write_bytes(b"sf")
    os.setxattr(x / "sf", "user.a", b"1")
    os.setxattr(x / "sf", "user.empty", b"")
    os.setxattr(x / "sf", "trusted.t", b"trusted value")
    os.setxattr(x / "sf", "security.s", b"secure")
    (x / "leaf").write_bytes(b"leaf")
    for i in range(30):
        os.setxattr(x / "leaf", f"user.attr{i:02d}", f"value {i} ".encode() * 5)
    (x / "node").write_bytes(b"node")
    for i in range(1000):
        os.setxattr(x / "node", f"user.n{i:04d}", f"v{i}".encode())
    for i in range(20):
        os.setxattr(x / "node", f"trusted.r{i}", b"t" * i)
    (x / "remote").write_bytes(b"remote")
    os.setxattr(x / "remote", "user.big", noise("rv", 5000))
    os.setxattr(x / "remote", "user.huge", pattern("huge", 65536))
    os.setxattr(x / "remote", "user.small", b"s")
    (x / "acl").write_bytes(b"acl")
    sh("setfacl", "-m", "u:1234:rw,g:55:r,m::rw", x / "acl")
    (x / "acldir").mkdir()
    sh("setfacl", "-d", "-m", "u:99:rx,g:5:r", x / "acldir")
    sh("setfacl", "-m", "u:7:rwx", x / "acldir")
    (x / "acldir" / "inherits").write_bytes(b"inherits")
    # times: nanoseconds, beyond 2038 (bigtime), before 1970
    t = root / "times"
    t.mkdir()
    for name, ns in (("ns", 1_234_567_890_123_456_789), ("future", 9_000_000_000 * 10**9 + 7),
                     ("past", -1_000_000_000 * 10**9 + 999)):
        (t / name).write_bytes(name.encode())
        os.utime(t / name, ns=(ns, ns))
    # permissions and owners
    p = root / "perms"
    p.mkdir()
    for mode in (0o4755, 0o2750, 0o1777, 0o000, 0o777):
        f = p / f"m{mode:04o}"
        f.write_bytes(b"m")
        os.chmod(f, mode)
        os.chown(f, mode, mode + 1)
    return ["fragmented.bin", "sparse.bin", "prealloc.bin", "dirs/sf", "dirs/block", "dirs/leaf",
            "dirs/node", "links/short", "links/long", "xattrs/sf", "xattrs/leaf", "xattrs/node",
            "xattrs/remote", "big.bin", "big-reflink.bin"]


def finish(name: str, img: Path, manifest: dict[str, dict[str, object]],
           meta: dict[str, object] | None = None, repair: bool = True) -> None:
    if repair:
        sh("xfs_repair", "-n", img)
    treeutil.save(manifest, HERE / f"{name}.json")
    if meta is not None:
        (HERE / f"{name}.meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    compress(img, HERE / f"{name}.img.zst")
    print(f"{name}: {(HERE / f'{name}.img.zst').stat().st_size} bytes compressed")


def build_mounted(name: str, mkfs_args: tuple[str, ...], fill: Callable[[Path], list[str]],
                  work: Path) -> None:
    img = work / f"{name}.img"
    mkfs(img, *mkfs_args)
    with loop_mount(img) as mnt:
        paths = fill(mnt)
        inos = {rel: os.lstat(mnt / rel).st_ino for rel in paths}
    with loop_mount(img, "ro") as mnt:
        manifest = treeutil.host_manifest(mnt)
    finish(name, img, manifest, {"inodes": inode_meta(img, inos)})


def populate_small(root: Path, block_note: str) -> list[str]:
    write(root / "hello.txt", f"hello from {block_note}\n".encode())
    write(root / "data.bin", pattern(block_note, 200000))
    with open(root / "holes.bin", "wb") as f:
        f.write(b"a" * 10)
        f.seek(300000)
        f.write(b"b" * 10)
    for name, n in (("sf", 3), ("block", 40), ("leaf", 250), ("node", 1500)):
        sub = root / name
        sub.mkdir()
        for i in range(n):
            (sub / f"{name}-entry-{i:05d}").touch()
    os.symlink("t" * 1000, root / "longlink")
    os.symlink("short", root / "shortlink")
    (root / "attrs").write_bytes(b"")
    for i in range(200):
        os.setxattr(root / "attrs", f"user.k{i:03d}", f"val{i}".encode() * 3)
    os.setxattr(root / "attrs", "user.remote", pattern("r", 3000))
    return ["sf", "block", "leaf", "node", "longlink", "attrs"]


def populate_1k(root: Path) -> list[str]:
    """1 KiB blocks, 4 KiB directory blocks; remote symlink and value split over extents."""
    paths = populate_small(root, "1k")
    # fragment the free space: fill it, then free every other block
    frag = root / "frag"
    frag.mkdir()
    st = os.statvfs(root)
    fill = root / "filler"
    with open(fill, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, (st.f_bavail - 4000) * st.f_bsize)
    n = 0
    while True:
        try:
            with open(frag / f"{n:05d}", "wb") as f:
                f.write(b"z" * 1024)
                os.fsync(f.fileno())
        except OSError:
            break
        n += 1
    (frag / f"{n:05d}").unlink(missing_ok=True)
    for i in range(0, n, 2):
        (frag / f"{i:05d}").unlink()
    os.symlink("/".join(f"split{i:03d}" for i in range(140))[:1020], root / "splitlink")
    (root / "splitattr").write_bytes(b"")
    os.setxattr(root / "splitattr", "user.split", noise("split", 4000))
    for i in range(1, n, 2):
        (frag / f"{i:05d}").unlink()
    frag.rmdir()
    fill.unlink()
    return [*paths, "splitlink", "splitattr"]


def populate_64k(root: Path) -> list[str]:
    return populate_small(root, "64k")


def build_dirty(work: Path) -> None:
    """A log with committed transactions the metadata never saw: shutdown without unmount."""
    name = "xfs-dirty"
    img = work / f"{name}.img"
    mkfs(img)
    with loop_mount(img) as mnt:
        populate_small(mnt, "dirty-before")
        (mnt / "doomed").mkdir()
        for i in range(400):
            (mnt / "doomed" / f"d{i}").write_bytes(b"d")
    # second mount: changes that live only in the log
    mnt = Path(tempfile.mkdtemp(prefix="xfsimg-"))
    sh("mount", "-o", "loop", img, mnt)
    try:
        shutil.rmtree(mnt / "doomed")
        new = mnt / "after"
        new.mkdir()
        for i in range(700):
            (new / f"n{i:04d}").write_bytes(f"after {i}\n".encode())
        write(mnt / "hello.txt", b"rewritten after the last clean unmount\n")
        os.setxattr(mnt / "attrs", "user.k000", b"replaced")
        os.removexattr(mnt / "attrs", "user.k001")
        os.rename(mnt / "sf", mnt / "sf-renamed")
        os.symlink("a" * 700, mnt / "after" / "remote-link")
        os.sync()
        manifest = treeutil.host_manifest(mnt)
        sh("xfs_io", "-x", "-c", "shutdown -f", mnt)
    finally:
        sh("umount", mnt)
        mnt.rmdir()
    out = sh("xfs_logprint", "-t", img)
    if "UNMOUNT" in out.splitlines()[-1:]:
        raise SystemExit("the dirty image has a clean log")
    treeutil.save(manifest, HERE / f"{name}.json")
    compress(img, HERE / f"{name}.img.zst")
    print(f"{name}: {(HERE / f'{name}.img.zst').stat().st_size} bytes compressed")


def build_100k(work: Path) -> None:
    """A directory of 100,000 entries (hard links) in node form with a btree data fork."""
    name = "xfs-100k"
    img = work / f"{name}.img"
    mkfs(img)
    with loop_mount(img) as mnt:
        target = mnt / "target"
        target.write_bytes(b"one inode, many names\n")
        big = mnt / "big"
        big.mkdir()
        spacer = os.open(mnt / "spacer", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
        blk = bytearray(4096)
        import mmap

        buf = mmap.mmap(-1, 4096)
        buf.write(bytes(blk))
        try:
            for i in range(100_000):
                os.link(target, big / f"entry-{i:06d}-{'abcdefgh'[:i % 9]}")
                if i % 40 == 39:
                    # interleave single-block allocations so the directory fragments
                    os.pwritev(spacer, [buf], (i // 40) * 8192)
        finally:
            os.close(spacer)
        inos = {"big": os.lstat(big).st_ino}
    with loop_mount(img, "ro") as mnt:
        manifest = treeutil.host_manifest(mnt)
    meta = {"inodes": inode_meta(img, inos)}
    finish(name, img, manifest, meta)


def build_v4(work: Path) -> None:
    """V4 (no CRCs, no ftype, 256-byte inodes) through a protofile: kernels no longer mount V4."""
    name = "xfs-v4"
    src = work / "v4src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    write(src / "hello.txt", b"hello v4\n")
    write(src / "data.bin", pattern("v4", 300000))
    lines = ["/dummy", "0 0", "d--755 0 0",
             "hello.txt ---644 0 0 " + str(src / "hello.txt"),
             "data.bin ---600 1000 1000 " + str(src / "data.bin"),
             "link l--777 0 0 hello.txt",
             "longlink l--777 0 0 " + "L" * 900,
             "null c--666 0 0 1 3",
             "disk b--640 0 6 8 1",
             "pipe p--600 0 0"]
    tree: dict[str, int] = {"sf": 4, "block": 60, "leaf": 300, "node": 2000}
    for d, n in tree.items():
        lines.append(f"{d} d--755 0 0")
        for i in range(n):
            lines.append(f"{d}-entry-{i:05d} ---644 {i % 3} 0 " + str(src / "hello.txt"))
        lines.append("$")
    lines.append("$")
    proto = work / "v4.proto"
    proto.write_text("\n".join(lines) + "\n")
    img = work / f"{name}.img"
    mkfs(img, "-m", "crc=0", "-n", "ftype=0", "-i", "size=256", "-p", os.fspath(proto))
    # the expected tree, as described by the protofile
    ref = work / "v4ref"
    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir()
    shutil.copy(src / "hello.txt", ref / "hello.txt")
    shutil.copy(src / "data.bin", ref / "data.bin")
    os.chmod(ref / "hello.txt", 0o644)
    os.chmod(ref / "data.bin", 0o600)
    os.chown(ref / "data.bin", 1000, 1000)
    os.symlink("hello.txt", ref / "link")
    os.symlink("L" * 900, ref / "longlink")
    os.mknod(ref / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(ref / "disk", 0o640 | 0o060000, os.makedev(8, 1))
    os.chown(ref / "disk", 0, 6)
    os.mkfifo(ref / "pipe", 0o600)
    for f, mode in (("null", 0o666), ("disk", 0o640), ("pipe", 0o600)):
        os.chmod(ref / f, mode)
    for d, n in tree.items():
        (ref / d).mkdir()
        os.chmod(ref / d, 0o755)
        os.chown(ref / d, 0, 0)
        for i in range(n):
            f = ref / d / f"{d}-entry-{i:05d}"
            shutil.copy(src / "hello.txt", f)
            os.chmod(f, 0o644)
            os.chown(f, i % 3, 0)
    os.chmod(ref, 0o755)
    os.chown(ref, 0, 0)
    for f in ("hello.txt", "link", "longlink", "null", "pipe"):
        os.lchown(ref / f, 0, 0)
    manifest = treeutil.host_manifest(ref, xattrs=False)
    # attributes in every V4 format, set by xfs_db (which fills values with "v")
    attrs = {"hello.txt": [("-u", "a1", 5), ("-r", "t1", 7), ("-s", "s1", 3)],
             "data.bin": [("-u", f"k{i:03d}", 20) for i in range(40)] + [("-u", "remote", 5000)],
             "node": [("-u", f"n{i:04d}", 8) for i in range(600)]}
    prefix = {"-u": "user.", "-r": "trusted.", "-s": "security."}
    for rel, items in attrs.items():
        ino = int(re.search(r"inode (\d+)", xfs_db(img, f"path /{rel}", "stack"))[1])  # type: ignore[index]
        cmds = ["-c", f"inode {ino}"]
        for ns, nm, n in items:
            cmds += ["-c", f"attr_set {ns} -v {n} {nm}"]
        sh("xfs_db", "-x", *cmds, img)
        for ns, nm, n in items:
            manifest[rel]["xattrs"][prefix[ns] + nm] = (b"v" * n).hex()
    shown = xfs_db(img, "path /hello.txt", "print a")
    if 'value = "vvvvv"' not in shown:
        raise SystemExit("xfs_db no longer fills attribute values with 'v':\n" + shown)
    root_ino = int(re.search(r"rootino = (\d+)", xfs_db(img, "sb 0", "print rootino"))[1])
    finish(name, img, manifest, {"rootino": root_ino})


def build_rt(work: Path) -> None:
    """A filesystem with a realtime device and a realtime file (EOPNOTSUPP for us).

    Neither this host's kernel (no CONFIG_XFS_RT) nor mkfs protofiles create
    realtime files, so an empty file gets the realtime flag through xfs_db.
    """
    name = "xfs-rt"
    img = work / f"{name}.img"
    rt = work / "rt.img"
    with open(rt, "wb") as f:
        f.truncate(64 << 20)
    src = work / "rt-normal.txt"
    src.write_bytes(b"on the data device\n")
    empty = work / "rt-empty"
    empty.write_bytes(b"")
    proto = work / "rt.proto"
    proto.write_text(f"/d\n0 0\nd--755 0 0\nnormal.txt ---644 0 0 {src}\n"
                     f"rtfile ---644 0 0 {empty}\n$\n")
    mkfs(img, "-r", "rtdev=" + os.fspath(rt), "-p", os.fspath(proto))
    out = xfs_db(img, "sb 0", "print rootino")
    root = int(re.search(r"rootino = (\d+)", out)[1])  # type: ignore[index]
    listing = xfs_db(img, f"inode {root}", "ls")
    ino = int(re.search(r"^\d+\s+(\d+)\s+\S+\s+\S+\s+\d+\s+rtfile\b", listing, re.M)[1])  # type: ignore[index]
    sh("xfs_db", "-x", "-c", f"inode {ino}", "-c", "write core.realtime 1", img)
    # xfs_repair objects to a realtime file that was never given realtime space
    finish(name, img, {}, repair=False, meta={"realtime": {"rtfile": ino}, "normal": ["normal.txt"],
                           "rblocks": int(re.search(r"rblocks = (\d+)",
                                                    xfs_db(img, "sb 0", "print rblocks"))[1])})  # type: ignore[index]


BUILDERS: dict[str, Callable[[Path], None]] = {
    "xfs-v5": lambda w: build_mounted("xfs-v5", ("-m", "rmapbt=1", "-i", "nrext64=1"),
                                      populate_main, w),
    "xfs-1k": lambda w: build_mounted("xfs-1k", ("-b", "size=1024", "-n", "size=4096"),
                                      populate_1k, w),
    "xfs-64k": lambda w: build_mounted("xfs-64k", ("-b", "size=65536"), populate_64k, w),
    "xfs-dirty": build_dirty,
    "xfs-100k": build_100k,
    "xfs-v4": build_v4,
    "xfs-rt": build_rt,
}


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root: images are populated through loop mounts")
    names = sys.argv[1:] or list(BUILDERS)
    with tempfile.TemporaryDirectory(prefix="make-xfs-") as tmp:
        for name in names:
            BUILDERS[name](Path(tmp))


if __name__ == "__main__":
    main()
