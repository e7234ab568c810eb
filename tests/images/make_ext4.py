#!/usr/bin/env python3
"""Regenerate the ext2/ext3/ext4 test images and their manifests (run as root).

    .venv/bin/python tests/images/make_ext4.py [NAME...]

Every image is made by the real ``mke2fs`` (``-d`` copies a generated source
tree) and, where a feature only the kernel produces is wanted (htree
directories, shared xattr blocks, unwritten extents, deep extent trees, a
dirty journal), populated through a host loop mount. The expected tree is
read back from a read-only loop mount of the finished image with
``treeutil.host_manifest`` - for a dirty-journal image, from a copy the host
kernel has recovered. Outputs: ``ext4-NAME.img.zst`` and ``ext4-NAME.json``
holding ``tree`` (the manifest, huge directories summarised), ``big`` (for
each summarised directory: entry count, digests of the sorted names and of
the host's readdir order, sample entries) and ``meta`` (facts from debugfs
used by the corruption tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from treeutil import host_manifest  # noqa: E402

ENV = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
JBD2_MAGIC = bytes.fromhex("c03b3998")
T2100 = 4102444800_123456789  # 2100-01-01, after 2038: needs the extra epoch bits


def sh(*cmd: str | os.PathLike[str], check: bool = True, input: str | None = None) -> str:
    r = subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True, env=ENV,
                       input=input)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


def debugfs(img: Path, request: str) -> str:
    return sh("debugfs", "-R", request, img)


@contextlib.contextmanager
def mounted(img: Path, opts: str = "") -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="ext4img-"))
    sh("mount", "-o", "loop" + ("," + opts if opts else ""), img, mnt)
    try:
        yield mnt
    finally:
        sh("umount", mnt)
        mnt.rmdir()


def mkfs(img: Path, size_mb: int, *args: str, src: Path | None = None, hash_alg: str = "") -> None:
    if img.exists():
        img.unlink()
    with open(img, "wb") as f:
        f.truncate(size_mb << 20)
    sh("mke2fs", "-q", "-F", *args, *(("-d", src) if src else ()), img)
    if hash_alg:
        sh("tune2fs", "-E", f"hash_alg={hash_alg}", img)


# -- summaries of huge directories (the tests apply the same function) ---------------------
def summarize(tree: dict[str, dict], big: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Replace the entries of each directory in ``big`` by one summary record."""
    out = dict(tree)
    summaries: dict[str, dict] = {}
    for d in big:
        prefix = d + "/"
        names = sorted(p[len(prefix):] for p in tree if p.startswith(prefix))
        entries = {p: out.pop(p) for p in [prefix + n for n in names]}
        # every entry of a big directory is a hard link to one inode: keep one record
        records = {json.dumps({k: v for k, v in e.items() if k != "links"}, sort_keys=True)
                   for e in entries.values()}
        summaries[d] = {"count": len(names),
                        "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
                        "records": sorted(records)}
    return out, summaries


def readdir_order(path: Path) -> str:
    """sha256 of the names in the host kernel's readdir order (the htree hash order)."""
    names = [e.name for e in os.scandir(path)]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def finish(name: str, img: Path, work: Path, big: tuple[str, ...] = (), meta: dict | None = None,
           reference: Path | None = None) -> None:
    """Compress the image, read the expected tree from a ro loop mount of ``reference``."""
    ref = reference or img
    sh("e2fsck", "-fn", ref)
    with mounted(ref, "ro") as mnt:
        tree = host_manifest(mnt)
        order = {d: readdir_order(mnt / d) for d in big}
        host_ls = {d: sorted(os.listdir(mnt / d))[::997][:25] for d in big}
        st = os.statvfs(mnt)
    tree, summaries = summarize(tree, list(big))
    for d in big:
        summaries[d]["order_sha256"] = order[d]
        summaries[d]["sample"] = host_ls[d]
    meta = dict(meta or {})
    meta["statfs"] = {"f_bsize": st.f_bsize, "f_blocks": st.f_blocks, "f_bfree": st.f_bfree,
                      "f_bavail": st.f_bavail, "f_files": st.f_files, "f_ffree": st.f_ffree}
    meta["image_sha256"] = hashlib.sha256(img.read_bytes()).hexdigest()
    sh("zstd", "-q", "-f", "-19", "-T2", img, "-o", HERE / f"ext4-{name}.img.zst")
    (HERE / f"ext4-{name}.json").write_text(
        json.dumps({"tree": tree, "big": summaries, "meta": meta}, indent=0, sort_keys=True) + "\n")
    print(f"ext4-{name}: {len(tree)} entries, image {img.stat().st_size >> 20} MiB, "
          f"compressed {(HERE / f'ext4-{name}.img.zst').stat().st_size >> 10} KiB")


# -- source trees ---------------------------------------------------------------------------------
def rich_tree(root: Path, small_inodes: bool = False, big_xattr: int = 1500) -> None:
    """Every file type, owners, modes, holes, links, xattrs and ACLs, for ``mke2fs -d``."""
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello, ext4\n")
    (root / "onek").write_bytes(bytes(range(256)) * 4)
    (root / "big.bin").write_bytes(hashlib.sha256(b"x").digest() * 40000)  # 1.25 MiB
    with open(root / "sparse", "wb") as f:  # holes at the start, middle and end
        f.seek(200_000)
        f.write(b"data in the middle" * 100)
        f.seek(3_000_000)
        f.write(b"tail")
        f.truncate(5_000_000)
    (root / "dir" / "sub" / "deeper").mkdir(parents=True)
    for i in range(40):
        (root / "dir" / f"file-{i:03d}").write_text(f"file number {i}\n" * i)
    (root / "dir" / "sub" / "deeper" / "leaf").write_text("leaf\n")
    os.symlink("small.txt", root / "fastlink")
    os.symlink("dir/sub/" + "x" * 90 + "/../../deeper-target", root / "slowlink")
    os.symlink("/" + "/".join(["long-component"] * 60), root / "longlink")  # ~900 bytes
    os.link(root / "small.txt", root / "hardlink")
    os.link(root / "small.txt", root / "dir" / "hardlink2")
    os.mknod(root / "chr-old", 0o620 | 0o020000, os.makedev(4, 7))
    os.mknod(root / "blk-new", 0o660 | 0o060000, os.makedev(259, 70000))
    os.mkfifo(root / "fifo", 0o644)
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.fspath(root / "socket"))
    s.close()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2711), ("sticky-dir", 0o1777)):
        p = root / name
        if name.endswith("dir"):
            p.mkdir()
        else:
            p.write_text(name)
        os.chmod(p, mode)
    os.chown(root / "small.txt", 1000, 1000)
    os.chown(root / "onek", 100000, 4000000000)  # 32-bit ids
    os.lchown(root / "fastlink", 4242, 4343)
    os.setxattr(root / "small.txt", "user.comment", b"a small file")
    os.setxattr(root / "small.txt", "trusted.t", b"\x00\x01binary")
    os.setxattr(root / "dir", "security.label", b"system_u:object_r:etc_t:s0\0")
    os.setxattr(root / "onek", "user.big", b"v" * big_xattr)  # not in the inode body
    os.setxattr(root / "onek", "user.empty", b"")
    sh("setfacl", "-m", "u:1234:rwx,g:55:r,m:rwx", root / "onek")
    sh("setfacl", "-d", "-m", "u::rwx,g::r-x,o::---,u:99:rw", root / "dir" / "sub")
    # times last (creating entries changes directory times)
    stamp = 1_600_000_000_123_456_789
    for i, (dirpath, dirnames, filenames) in enumerate(sorted(os.walk(root), reverse=True)):
        for n in dirnames + filenames + [""]:
            p = os.path.join(dirpath, n) if n else dirpath
            os.utime(p, ns=(stamp + i * 1_000_001, stamp + i * 7_777_777), follow_symlinks=False)
    if not small_inodes:
        os.utime(root / "onek", ns=(T2100, T2100))
        os.utime(root / "empty", ns=(-1_000_000_000, -123_456_789))  # before 1970


def kernel_extras(mnt: Path, beyond_eof: bool = True) -> None:
    """Features only the kernel makes: shared xattr blocks, unwritten and fragmented files."""
    shared = mnt / "shared-xattr"
    shared.mkdir()
    for i in range(3):
        p = shared / f"f{i}"
        p.write_text(f"{i}\n")
        for k in range(4):  # identical sets: ext4's mbcache shares one xattr block
            os.setxattr(p, f"user.attr{k}", bytes([65 + k]) * 300)
    # unwritten extents: preallocate, then write a piece in the middle
    with open(mnt / "prealloc", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 1 << 20)
        f.seek(300_000)
        f.write(b"written into preallocated space")
    if beyond_eof:  # (on bigalloc the host kernel gets i_blocks wrong for this)
        sh("fallocate", "-n", "-o", "1048576", "-l", "65536", mnt / "prealloc")
    # fragmented: two files growing in turns, synced each step
    with open(mnt / "frag-a", "wb") as a, open(mnt / "frag-b", "wb") as b:
        for i in range(60):
            for f, tag in ((a, b"A"), (b, b"B")):
                f.write(tag * 5000 + i.to_bytes(2, "little"))
                f.flush()
                os.fsync(f.fileno())
    os.utime(mnt / "frag-a", ns=(T2100, T2100 + 5))


def holey(path: Path, blocks: int, bs: int, stride: int = 2) -> None:
    """A file with one written block every ``stride``: one extent each (a deep tree)."""
    with open(path, "wb") as f:
        for i in range(blocks):
            f.seek(i * stride * bs)
            f.write(i.to_bytes(4, "little") * (bs // 4))
        f.flush()
        os.fsync(f.fileno())


def big_dir(path: Path, count: int, name: Callable[[int], str]) -> None:
    """``count`` hard links to one file (a huge directory without ``count`` inodes)."""
    path.mkdir()
    target = path.parent / (path.name + ".target")
    target.write_text("every entry of the big directory links here\n")
    for i in range(count):
        os.link(target, path / name(i))


# -- the images --------------------------------------------------------------------------------------
def make_basic(work: Path) -> None:
    """4 KiB ext4 with mkfs defaults (64bit, metadata_csum, flex_bg, huge_file, dir_nlink,
    extra_isize) plus orphan_file; a 20,000-entry htree directory (half_md4)."""
    src = work / "basic-src"
    rich_tree(src)
    img = work / "basic.img"
    mkfs(img, 24, "-t", "ext4", "-b", "4096", "-O", "orphan_file", "-L", "basic", src=src,
         hash_alg="half_md4")
    with mounted(img) as mnt:
        kernel_extras(mnt)
        big_dir(mnt / "big", 20000, lambda i: f"entry-{i:05d}-" + "n" * (i % 37))
        (mnt / "smalldir").mkdir()
        for n in ("b", "a", "c"):
            (mnt / "smalldir" / n).write_text(n)
        os.utime(mnt / "big", ns=(1, 2))
    meta = {"htree": _htree_info(img, "/big"), "locations": _locations(img)}
    finish("basic", img, work, big=("big",), meta=meta)


def make_ext2(work: Path) -> None:
    """1 KiB ext2, 128-byte inodes, no dir_index: indirect blocks up to triple indirect."""
    src = work / "ext2-src"
    rich_tree(src, small_inodes=True, big_xattr=500)
    bs = 1024
    with open(src / "triple", "wb") as f:
        # direct, single, double and triple indirect ranges (12, 256, 65536 blocks)
        for lblk in (0, 5, 11, 12, 200, 267, 268, 5000, 65803, 65804, 70000, 100000):
            f.seek(lblk * bs)
            f.write(lblk.to_bytes(4, "little") * (bs // 4))
        f.truncate(100 << 20)  # 100 MiB, past the ~64 MiB double-indirect reach
    img = work / "ext2.img"
    mkfs(img, 12, "-t", "ext2", "-b", "1024", "-I", "128", "-O", "^dir_index", src=src)
    with mounted(img) as mnt:
        for i in range(2):
            p = mnt / f"shared{i}"
            p.write_text("same attributes\n")
            os.setxattr(p, "user.same", b"identical value")
        d = mnt / "linear"
        d.mkdir()
        for i in range(300):
            (d / f"name-{i:04d}-{'z' * (i % 50)}").write_text(str(i))
    finish("ext2", img, work, meta={"locations": _locations(img, file="/triple")})


def make_ext3(work: Path) -> None:
    """2 KiB ext3 (legacy hash) with a dirty journal: 32-bit tags, no checksums,
    an escaped block (data=journal), revoke records."""
    src = work / "ext3-src"
    rich_tree(src, small_inodes=False)
    img = work / "ext3.img"
    mkfs(img, 16, "-t", "ext3", "-b", "2048", src=src, hash_alg="legacy")
    with mounted(img) as mnt:
        big_dir(mnt / "legacy", 1500, lambda i: f"l{i}")
    _dirty(img, "data=ordered", sync_first=False)
    ref = work / "ext3-replayed.img"
    shutil.copyfile(img, ref)
    with mounted(ref):
        pass  # the host kernel replays the journal
    meta = {"logdump": _logdump_summary(img)}
    finish("ext3", img, work, big=("legacy",), meta=meta, reference=ref)


def make_dirty(work: Path) -> None:
    """4 KiB ext4 (csum v3, 64-bit tags) left with a dirty journal by a kernel shutdown,
    with revoked blocks reused for data and an open, unlinked file (orphan_file)."""
    img = work / "dirty.img"
    mkfs(img, 32, "-t", "ext4", "-O", "orphan_file", hash_alg="tea")
    with mounted(img) as mnt:
        (mnt / "keep").write_text("written before the crash\n")
    _dirty(img, "data=ordered", sync_first=False)
    ref = work / "dirty-replayed.img"
    shutil.copyfile(img, ref)
    with mounted(ref):
        pass
    finish("dirty", img, work, meta={"logdump": _logdump_summary(img)}, reference=ref)


def _dirty(img: Path, data_mode: str, sync_first: bool = True) -> None:
    """Journaled changes that are never checkpointed (shutdown with log flush)."""
    with mounted(img, data_mode) as mnt:
        d = mnt / "doomed"
        d.mkdir()
        for i in range(400):
            (d / f"entry-{i}").write_text(str(i))
        if sync_first:
            sh("sync", "-f", mnt)
        else:  # commit without writing anything home
            fd = os.open(d, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        # from here on, changes reach the journal (fsync commits) but not their home
        # blocks: only a replay shows them
        for p in d.iterdir():
            p.unlink()
        d.rmdir()
        # data in blocks the journal still holds as (revoked) directory blocks
        with open(mnt / "reused", "wb") as f:
            f.write(hashlib.sha256(b"reuse").digest() * 4096)
            os.fsync(f.fileno())
        # a block whose first bytes are the jbd2 magic: escaped when journaled
        with open(mnt / "escaped", "wb") as f:
            f.write(JBD2_MAGIC + b"\x00\x00\x00\x01" + b"escape me" * 400)
            os.fsync(f.fileno())
        (mnt / "renamed-from").write_text("moved\n")
        os.rename(mnt / "renamed-from", mnt / "renamed-to")
        held = open(mnt / "orphan", "wb")
        held.write(b"open but unlinked")
        held.flush()
        os.unlink(mnt / "orphan")
        sh("xfs_io", "-x", "-c", "shutdown -f", mnt)
        held.close()
    if "needs_recovery" not in sh("dumpe2fs", "-h", img, check=False):
        raise SystemExit(f"{img}: the shutdown left no dirty journal")


def make_largedir(work: Path) -> None:
    """1 KiB ext4 with large_dir: a 3-level htree (tea, unsigned hash), a depth-2 extent
    tree, UTF-8 names (bytes >= 0x80 tell signed from unsigned hashing)."""
    img = work / "largedir.img"
    mkfs(img, 48, "-t", "ext4", "-b", "1024", "-O", "large_dir,^resize_inode",
         "-N", "2048", hash_alg="tea")
    debugfs_w(img, "ssv flags 2")  # EXT2_FLAGS_UNSIGNED_HASH
    with mounted(img) as mnt:
        big_dir(mnt / "huge", 36000, lambda i: f"{i:06d}-é-" + "l" * 230)
        holey(mnt / "deep-extents", 1200, 1024)
        (mnt / "ünïcödé").mkdir()
        for n in ("naïve", "日本語", "\u00ff" * 10):
            (mnt / "ünïcödé" / n).write_text(n)
    info = _htree_info(img, "/huge")
    if info["levels"] < 3:
        raise SystemExit(f"largedir: htree has {info['levels']} levels, wanted 3")
    ex = debugfs(img, "ex /deep-extents")
    meta = {"htree": info, "extent_depth": max(int(line.split()[0].split("/")[0])
                                               for line in ex.splitlines()[1:] if "/" in line),
            "locations": _locations(img, file="/deep-extents")}
    node_lblk = int(debugfs(img, "htree /huge").split("Entry #0: Hash 0x00000000, block")[1].split()[0])
    meta["locations"]["htree_node"] = int(debugfs(img, f"bmap /huge {node_lblk}").split()[0])
    finish("largedir", img, work, big=("huge",), meta=meta)


def make_inline(work: Path) -> None:
    """ext4 with inline_data and 512-byte inodes: inline files, directories, symlinks."""
    src = work / "inline-src"
    src.mkdir()
    for n in (0, 1, 59, 60, 61, 150, 300):
        (src / f"inline-{n}").write_bytes(bytes((i * 7) & 0xFF for i in range(n)))
    (src / "tiny-dir").mkdir()
    (src / "tiny-dir" / "x").write_text("x")
    (src / "grown-dir").mkdir()
    for i in range(200):
        (src / "grown-dir" / f"entry-{i}").write_text("")
    os.symlink("t" * 70, src / "inline-symlink")
    os.symlink("short", src / "fast-symlink")
    img = work / "inline.img"
    mkfs(img, 8, "-t", "ext4", "-I", "512", "-O", "inline_data", src=src)
    with mounted(img) as mnt:
        d = mnt / "kernel-dir"
        d.mkdir()
        for i in range(5):
            (d / f"k{i}").write_text("k" * i)
        os.setxattr(mnt / "inline-61", "user.also", b"an xattr beside inline data")
    finish("inline", img, work)


def make_bigalloc(work: Path) -> None:
    """4 KiB blocks in 64 KiB clusters, ea_inode: attribute values in their own inodes."""
    src = work / "bigalloc-src"
    rich_tree(src, big_xattr=40)  # mke2fs -d miscounts i_blocks for xattr blocks on bigalloc
    img = work / "bigalloc.img"
    mkfs(img, 32, "-t", "ext4", "-O", "bigalloc,ea_inode", "-C", "65536", src=src)
    with mounted(img) as mnt:
        p = mnt / "ea-inode-file"
        p.write_text("has a huge attribute\n")
        os.setxattr(p, "user.huge", hashlib.sha256(b"ea").digest() * 625)  # 20000 bytes
        os.setxattr(p, "user.medium", b"m" * 6000)
        q = mnt / "ea-shared"
        q.write_text("same huge value\n")
        os.setxattr(q, "user.huge", hashlib.sha256(b"ea").digest() * 625)
        kernel_extras(mnt, beyond_eof=False)
    finish("bigalloc", img, work, meta={"locations": _locations(img, file="/ea-inode-file")})


def make_features(work: Path) -> None:
    """1 KiB blocks with meta_bg, sparse_super2, uninit_bg without metadata_csum."""
    src = work / "features-src"
    rich_tree(src, big_xattr=500)
    img = work / "features.img"
    mkfs(img, 40, "-t", "ext4", "-b", "1024", "-g", "1024", "-O",
         "meta_bg,^resize_inode,sparse_super2,uninit_bg,^metadata_csum", src=src)
    finish("features", img, work)


def make_bs64k(work: Path) -> None:
    """64 KiB blocks (mkfs allows them; dirent rec_len has its own encoding there).

    The host kernel cannot mount blocks larger than its pages, so the expected
    tree is the source tree's (mkfs -d keeps whole seconds only).
    """
    src = work / "bs64k-src"
    rich_tree(src, small_inodes=True)
    img = work / "bs64k.img"
    mkfs(img, 24, "-t", "ext4", "-b", "65536", src=src)
    sh("e2fsck", "-fn", img)
    tree = host_manifest(src)
    for e in tree.values():
        e["mtime_ns"] -= e["mtime_ns"] % 1_000_000_000
    tree.pop(".")
    sh("zstd", "-q", "-f", "-19", "-T2", img, "-o", HERE / "ext4-bs64k.img.zst")
    meta = {"reference": "source tree, whole seconds, root and lost+found left out",
            "image_sha256": hashlib.sha256(img.read_bytes()).hexdigest()}
    (HERE / "ext4-bs64k.json").write_text(
        json.dumps({"tree": tree, "big": {}, "meta": meta}, indent=0, sort_keys=True) + "\n")
    print(f"ext4-bs64k: {len(tree)} entries")


def make_crypt(work: Path) -> None:
    """casefold and encrypt: a casefolded directory and one flagged encrypted (both refused).

    The host kernel here may lack CONFIG_UNICODE, so the directory is filled
    first and the casefold feature and flags are set afterwards with
    tune2fs and debugfs.
    """
    img = work / "crypt.img"
    mkfs(img, 8, "-t", "ext4", "-O", "encrypt")
    with mounted(img) as mnt:
        (mnt / "folded").mkdir()
        (mnt / "folded" / "MixedCase").write_text("case-insensitive\n")
        (mnt / "secret").mkdir()
        (mnt / "secret" / "file").write_text("not really secret\n")
        (mnt / "plain").write_text("readable\n")
    ref = work / "crypt-ref.img"
    shutil.copyfile(img, ref)
    sh("tune2fs", "-O", "casefold", img)
    debugfs_w(img, "set_inode_field /folded flags 0x40080000")  # EXTENTS | CASEFOLD
    debugfs_w(img, "set_inode_field /secret flags 0x80800")  # EXTENTS | ENCRYPT
    debugfs_w(img, "set_inode_field /secret/file flags 0x80800")
    finish("crypt", img, work, reference=ref)


def debugfs_w(img: Path, request: str) -> None:
    sh("debugfs", "-w", "-R", request, img)


def _htree_info(img: Path, path: str) -> dict:
    out = debugfs(img, f"htree {path}")
    head = {}
    for line in out.splitlines()[:6]:
        for key in ("Root node dump:", "Reserved zero:", "Hash Version:", "Info length:",
                    "Indirect levels:", "Flags:"):
            if line.strip().startswith(key):
                head[key.rstrip(":").lower().replace(" ", "_")] = line.split(":")[1].strip()
    return {"levels": int(head.get("indirect_levels", "0")) + 1,
            "hash_version": int(head.get("hash_version", "0"))}


def _locations(img: Path, file: str = "/small.txt") -> dict:
    """Where structures live, from debugfs, for the corruption tests."""
    out: dict = {}
    imap = debugfs(img, f"imap {file}")
    # "Inode 12 is part of block group 0\n\tlocated at block 1058, offset 0x0b00"
    line = imap.split("located at block")[1].split()
    out["inode_block"] = int(line[0].rstrip(","))
    out["inode_offset"] = int(line[2], 16)
    out["file"] = file
    stats = debugfs(img, "stats")
    out["block_size"] = int(stats.split("Block size:")[1].split()[0])
    st = debugfs(img, f"stat {file}")
    if "File ACL:" in st:
        out["xattr_block"] = int(st.split("File ACL:")[1].split()[0])
    if file == "/small.txt":
        out["dir_block"] = int(debugfs(img, "bmap /dir 0").split()[0])
        out["xattr_block"] = int(debugfs(img, "stat /onek").split("File ACL:")[1].split()[0])
    ex = debugfs(img, f"ex {file}").splitlines()
    nodes = [line.split() for line in ex[1:] if line.strip().startswith("1/")]
    if nodes:  # a level-1 node of the extent tree: the block holding it
        out["extent_node"] = int(nodes[0][-2])
    return out


def _logdump_summary(img: Path) -> dict:
    out = debugfs(img, "logdump")
    return {"revoke_blocks": out.count("revoke table"), "descriptors": out.count("descriptor block"),
            "commits": out.count("commit block")}


MAKERS = {"basic": make_basic, "ext2": make_ext2, "ext3": make_ext3, "dirty": make_dirty,
          "largedir": make_largedir, "inline": make_inline, "bigalloc": make_bigalloc,
          "features": make_features, "bs64k": make_bs64k, "crypt": make_crypt}


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root: the images are populated through loop mounts")
    names = sys.argv[1:] or list(MAKERS)
    with tempfile.TemporaryDirectory(prefix="make-ext4-") as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            MAKERS[name](work)


if __name__ == "__main__":
    main()
