#!/usr/bin/env python3
"""Make the damaged images the robustness tests run every tool on (run as root).

    .venv/bin/python tests/images/make_damaged.py

Each is a small image made by the real mkfs, then damaged the way real images are: cut
short, superblocks zeroed or failing their checksums, a directory linked into its own
subtree, an extent pointing past the end of the device, a directory block failing its
checksum, a block claimed by two files, a reachable inode with no links, names holding '/'
or NUL. ``damaged.json`` says, per image, whether the damage is fatal (nothing can be
mounted) or local (the rest of the tree reads).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def sh(*cmd: object) -> str:
    r = subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True, env=ENV)  # type: ignore[arg-type]
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed: {r.stdout}{r.stderr}")
    return r.stdout


def poke(img: Path, offset: int, data: bytes) -> None:
    with open(img, "r+b") as f:
        f.seek(offset)
        f.write(data)


def tree(src: Path) -> None:
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "deep.txt").write_text("deep\n")
    for i in range(20):
        (src / "a" / f"file{i:02d}").write_text(f"file {i}\n" * 50)
    (src / "big").write_bytes(bytes(range(256)) * 400)
    (src / "other").write_bytes(b"o" * 9000)
    os.symlink("big", src / "link")


def ext4(work: Path, name: str, *args: str) -> Path:
    src = work / "src"
    if not src.exists():
        src.mkdir()
        tree(src)
    img = work / f"{name}.img"
    with open(img, "wb") as f:
        f.truncate(4 << 20)
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", *args, "-d", src, img)
    return img


def debugfs(img: Path, *requests: str) -> str:
    out = ""
    for r in requests:
        out += sh("debugfs", "-w", "-R", r, img)
    return out


def first_block(img: Path, path: str) -> int:
    out = sh("debugfs", "-R", f"blocks {path}", img)
    return int(out.split()[0])


def make(work: Path) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    bs = 1024

    def done(name: str, img: Path, fatal: bool, what: str) -> None:
        sh("zstd", "-q", "-f", "-19", img, "-o", HERE / f"damaged-{name}.img.zst")
        out[name] = {"fatal": fatal, "what": what}

    img = ext4(work, "t")
    data = img.read_bytes()
    cut = work / "cut.img"
    cut.write_bytes(data[:len(data) // 2])
    done("ext4-truncated", cut, True, "cut to half its size")
    nosb = work / "nosb.img"
    shutil.copy(img, nosb)
    poke(nosb, 1024, bytes(1024))
    done("ext4-zeroed-superblock", nosb, True, "primary superblock zeroed")
    badsb = work / "badsb.img"
    shutil.copy(img, badsb)
    poke(badsb, 1024 + 0x78, b"X")  # s_volume_name, checksum left stale
    done("ext4-superblock-checksum", badsb, True, "superblock checksum mismatch")

    loop = ext4(work, "loop")
    debugfs(loop, "link /a /a/b/loop")
    done("ext4-directory-loop", loop, False, "a directory linked into its own subtree")

    past = ext4(work, "past")
    debugfs(past, "sif /big block[5] 0x7fffff0")  # ee_start_lo of the first extent
    done("ext4-extent-past-end", past, False, "an extent pointing past the end of the device")

    dcs = ext4(work, "dcs")
    poke(dcs, first_block(dcs, "/a") * bs + 40, b"\xff")
    done("ext4-directory-checksum", dcs, False, "a directory block failing its checksum")

    shared = ext4(work, "shared")
    blk = first_block(shared, "/big")
    debugfs(shared, f"sif /other block[5] {blk}")
    done("ext4-block-claimed-twice", shared, False, "two files claiming one block")

    nolinks = ext4(work, "nolinks")
    debugfs(nolinks, "sif /a/file03 links_count 0")
    done("ext4-unlinked-inode-reachable", nolinks, False, "a reachable inode with no links")

    huge = ext4(work, "huge")
    debugfs(huge, "sif /a/file04 size 0x7fffffffffff", "sif /a/file05 size 0xffffffffffffffff")
    done("ext4-impossible-sizes", huge, False, "files with impossible sizes")

    for label, byte in (("slash", b"/"), ("nul", b"\0")):
        bad = ext4(work, f"name-{label}", "-O", "^metadata_csum")
        off = first_block(bad, "/a") * bs
        raw = bad.read_bytes()[off:off + bs]
        m = re.search(rb"file07", raw)
        assert m is not None
        poke(bad, off + m.start() + 4, byte)
        done(f"ext4-name-with-{label}", bad, False, f"a directory entry name holding {byte!r}")

    # xfs: the smallest filesystem mkfs.xfs makes
    x = work / "x.img"
    with open(x, "wb") as f:
        f.truncate(300 << 20)
    sh("mkfs.xfs", "-q", "-f", x)
    xd = x.read_bytes()
    xc = work / "xcut.img"
    xc.write_bytes(xd[:len(xd) // 3])
    done("xfs-truncated", xc, True, "cut to a third of its size")
    xb = work / "xbad.img"
    shutil.copy(x, xb)
    poke(xb, 0x6C, b"\xff\xff")  # in sb_fname: the CRC no longer matches
    done("xfs-superblock-checksum", xb, True, "superblock CRC mismatch")

    # btrfs
    b = work / "b.img"
    with open(b, "wb") as f:
        f.truncate(128 << 20)
    sh("mkfs.btrfs", "-q", "-f", "--rootdir", work / "src", b)
    bd = b.read_bytes()
    bc = work / "bcut.img"
    bc.write_bytes(bd[:24 << 20])
    done("btrfs-truncated", bc, True, "cut short (24 MiB of 128)")
    bb = work / "bbad.img"
    shutil.copy(b, bb)
    for off in (0x10000, 0x4000000):
        poke(bb, off + 0x12B, b"damaged")  # the label, checksums left stale
    done("btrfs-superblock-checksum", bb, True, "every superblock copy fails its checksum")
    return out


def main() -> None:
    work = Path(sh("mktemp", "-d", "/var/tmp/damaged-XXXXXX").strip())
    try:
        info = make(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (HERE / "damaged.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    print(f"{len(info)} damaged images")


if __name__ == "__main__":
    sys.exit(main())
