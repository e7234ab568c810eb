#!/usr/bin/env python3
"""Regenerate the btrfs test images and their manifests (run as root).

    .venv/bin/python tests/images/make_btrfs.py [NAME...]

``basic`` is made by ``mkfs.btrfs --rootdir`` from ext4's rich source tree;
``features`` is populated through a host kernel mount (compression with
zlib, lzo and zstd for inline and regular extents, a subvolume, a snapshot,
reflinked and preallocated files, NO_HOLES); ``dup`` has DUP metadata and a
non-default checksum per image (xxhash64, sha256, blake2b); ``deep`` has 4 KiB
nodes and 3,000 files, so that its trees have internal nodes (three levels in the
fs tree) for the searches and the fuzzer to go through. The expected
tree is read back from a read-only loop mount with ``treeutil.host_manifest``.
Outputs: ``btrfs-NAME.img.zst`` and ``btrfs-NAME.json`` ({"tree": ..., "meta": ...}).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from make_ext4 import mounted, rich_tree, sh  # noqa: E402
from treeutil import host_manifest  # noqa: E402

SIZE_MB = 128  # mkfs.btrfs's minimum for mixed-free layouts is about 114 MiB


def mkfs(img: Path, *args: str, src: Path | None = None) -> None:
    if img.exists():
        img.unlink()
    with open(img, "wb") as f:
        f.truncate(SIZE_MB << 20)
    sh("mkfs.btrfs", "-q", "-f", *args, *(("--rootdir", src) if src else ()), img)


def finish(name: str, img: Path, meta: dict | None = None) -> None:
    sh("btrfs", "check", "--readonly", img)
    with mounted(img, "ro") as mnt:
        tree = host_manifest(mnt)
        subvols = {}
        for p, e in tree.items():
            if e["type"] == "dir":
                subvols[p] = os.stat(mnt / p).st_dev
    root_dev = subvols["."]
    meta = dict(meta or {})
    meta["other_dev"] = sorted(p for p, d in subvols.items() if d != root_dev)
    meta["image_sha256"] = hashlib.sha256(img.read_bytes()).hexdigest()
    sh("zstd", "-q", "-f", "-19", "-T2", img, "-o", HERE / f"btrfs-{name}.img.zst")
    (HERE / f"btrfs-{name}.json").write_text(
        json.dumps({"tree": tree, "meta": meta}, indent=0, sort_keys=True) + "\n")
    print(f"btrfs-{name}: {len(tree)} entries, compressed "
          f"{(HERE / f'btrfs-{name}.img.zst').stat().st_size >> 10} KiB")


def make_basic(work: Path) -> None:
    src = work / "basic-src"
    rich_tree(src)
    img = work / "basic.img"
    mkfs(img, src=src)
    finish("basic", img)


def _compressible(n: int, seed: bytes) -> bytes:
    words = [hashlib.sha256(seed + bytes([i])).hexdigest()[:8].encode() for i in range(16)]
    return b" ".join(words[(i * 7) % 16] for i in range(n // 9 + 1))[:n]


def make_features(work: Path) -> None:
    img = work / "features.img"
    mkfs(img, "-O", "no-holes")
    with mounted(img) as mnt:
        for algo in ("zlib", "lzo", "zstd"):
            d = mnt / algo
            d.mkdir()
            sh("btrfs", "property", "set", d, "compression", algo)
            (d / "inline").write_bytes(_compressible(1500, algo.encode()))
            (d / "regular").write_bytes(_compressible(300_000, algo.encode()))
            (d / "mixed").write_bytes(_compressible(100_000, algo.encode()) + os.urandom(50_000))
            with open(d / "sparse", "wb") as f:
                f.seek(1 << 20)
                f.write(_compressible(70_000, b"s" + algo.encode()))
        sh("btrfs", "subvolume", "create", mnt / "subvol")
        (mnt / "subvol" / "inside").write_text("in a subvolume\n")
        (mnt / "subvol" / "dir").mkdir()
        (mnt / "subvol" / "dir" / "deep").write_bytes(os.urandom(20000))
        sh("btrfs", "subvolume", "snapshot", mnt / "subvol", mnt / "snap")
        (mnt / "subvol" / "after-snapshot").write_text("not in the snapshot\n")
        (mnt / "orig").write_bytes(os.urandom(200_000))
        sh("cp", "--reflink=always", mnt / "orig", mnt / "reflinked")
        with open(mnt / "reflinked", "r+b") as f:
            f.seek(100_000)
            f.write(b"changed in the copy")
        with open(mnt / "prealloc", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, 1 << 20)
            f.seek(300_000)
            f.write(b"written into preallocated space")
        many = mnt / "many"
        many.mkdir()
        for i in range(600):
            (many / f"file-{i:04d}").write_text(str(i))
        os.link(many / "file-0001", mnt / "hardlink-to-many")
        (mnt / "inline-plain").write_text("small and inline\n")
        os.setxattr(mnt / "inline-plain", "user.a", b"1")
        os.setxattr(mnt / "inline-plain", "user.b", b"2" * 500)
        sh("setfacl", "-m", "u:1234:rwx,m:rwx", mnt / "inline-plain")
    finish("features", img)


def make_csums(work: Path) -> None:
    for csum in ("xxhash", "sha256", "blake2"):
        src = work / f"{csum}-src"
        src.mkdir()
        (src / "data").write_bytes(hashlib.sha256(csum.encode()).digest() * 5000)
        (src / "small").write_text(f"{csum}\n")
        img = work / f"{csum}.img"
        mkfs(img, "--csum", csum, "-m", "dup", "-n", "4096", src=src)
        finish(csum, img, {"csum": csum})


def make_layouts(work: Path) -> None:
    """64 KiB nodes without NO_HOLES (explicit hole extents); mixed block groups."""
    src = work / "layout-src"
    rich_tree(src)
    img = work / "node64k.img"
    mkfs(img, "-n", "65536", "-O", "^no-holes", src=src)
    finish("node64k", img)
    img = work / "mixed.img"
    mkfs(img, "--mixed", src=src)
    finish("mixed", img)


def make_deep(work: Path) -> None:
    src = work / "deep-src"
    for d in range(30):
        (src / f"d{d:02}").mkdir(parents=True)
        for f in range(100):
            (src / f"d{d:02}" / f"f{f:03}").write_bytes(b"x" * (f * 37 % 3000))
    os.symlink("d00/f001", src / "link")
    img = work / "deep.img"
    mkfs(img, "-n", "4096", src=src)
    finish("deep", img)


MAKERS = {"basic": make_basic, "features": make_features, "csums": make_csums,
          "layouts": make_layouts, "deep": make_deep}


def main() -> None:
    names = sys.argv[1:] or list(MAKERS)
    work = Path(subprocess.run(["mktemp", "-d", "/var/tmp/btrfsimg-XXXXXX"], capture_output=True,
                               text=True, check=True).stdout.strip())
    try:
        for n in names:
            MAKERS[n](work)
    finally:
        sh("rm", "-rf", work)


if __name__ == "__main__":
    main()
