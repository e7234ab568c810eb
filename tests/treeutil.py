"""Describe a directory tree the same way from the host and from our kernel.

``host_manifest(path)`` walks a host directory with ``os``;
``kernel_manifest(sys, path)`` walks one inside the library kernel through
``kernel.sys``. Both give ``{relative_path: entry}`` where an entry records
type, mode, owner, size, content hash, nanosecond mtime, symlink target,
device numbers, extended attributes and a hard-link group key, so two trees
compare with ``==`` and differences print readably (``diff_manifests``).
Manifests are stored as JSON beside test images (``save``/``load``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

Entry = dict[str, Any]

# Fields compared by default; atime/ctime change under any reader, dir sizes
# and inode numbers are filesystem-specific.
DEFAULT_FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "mtime_ns", "target", "rdev",
                  "xattrs", "links")


def _type(mode: int) -> str:
    return {stat.S_IFREG: "reg", stat.S_IFDIR: "dir", stat.S_IFLNK: "lnk", stat.S_IFCHR: "chr",
            stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock"}[stat.S_IFMT(mode)]


def _finish(entries: dict[str, Entry], inodes: dict[tuple[int, int], list[str]]) -> dict[str, Entry]:
    # a hard-link group is named by its first path in sorted order
    for paths in inodes.values():
        paths.sort()
        if len(paths) > 1:
            for p in paths:
                entries[p]["links"] = paths[0]
    return entries


def host_manifest(root: str | os.PathLike[str], xattrs: bool = True) -> dict[str, Entry]:
    root = os.fspath(root)
    entries: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], list[str]] = {}

    def visit(rel: str) -> None:
        full = os.path.join(root, rel) if rel != "." else root
        st = os.lstat(full)
        e: Entry = {"type": _type(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                    "gid": st.st_gid, "mtime_ns": st.st_mtime_ns, "nlink": st.st_nlink,
                    "size": None, "sha256": None, "target": None, "rdev": None, "xattrs": {},
                    "links": None}
        t = e["type"]
        if t == "reg":
            e["size"] = st.st_size
            h = hashlib.sha256()
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            e["sha256"] = h.hexdigest()
        elif t == "lnk":
            e["target"] = os.fsdecode(os.readlink(full))
            e["size"] = st.st_size
        elif t in ("chr", "blk"):
            e["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        if xattrs and t != "lnk":
            try:
                names = os.listxattr(full, follow_symlinks=False)
            except OSError:
                names = []
            e["xattrs"] = {n: os.getxattr(full, n, follow_symlinks=False).hex() for n in sorted(names)}
        entries[rel] = e
        if t != "dir":
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        if t == "dir":
            for name in sorted(os.listdir(full)):
                visit(name if rel == "." else os.path.join(rel, name))

    visit(".")
    return _finish(entries, inodes)


def kernel_manifest(sys: Any, root: str, xattrs: bool = True) -> dict[str, Entry]:
    """The same description, read through ``kernel.sys`` under ``root``."""
    import kernel

    entries: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], list[str]] = {}

    def visit(rel: str) -> None:
        full = root if rel == "." else root.rstrip("/") + "/" + rel
        st = sys.lstat(full)
        e: Entry = {"type": _type(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                    "gid": st.st_gid, "mtime_ns": st.st_mtime_ns, "nlink": st.st_nlink,
                    "size": None, "sha256": None, "target": None, "rdev": None, "xattrs": {},
                    "links": None}
        t = e["type"]
        if t == "reg":
            e["size"] = st.st_size
            h = hashlib.sha256()
            fd = sys.open(full, kernel.O_RDONLY)
            try:
                while True:
                    chunk = sys.read(fd, 1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
            finally:
                sys.close(fd)
            e["sha256"] = h.hexdigest()
        elif t == "lnk":
            e["target"] = os.fsdecode(sys.readlink(full))
            e["size"] = st.st_size
        elif t in ("chr", "blk"):
            e["rdev"] = [kernel.uapi.major(st.st_rdev), kernel.uapi.minor(st.st_rdev)]
        if xattrs and t != "lnk":
            names = sys.llistxattr(full)
            e["xattrs"] = {os.fsdecode(n): sys.lgetxattr(full, n).hex() for n in sorted(names)}
        entries[rel] = e
        if t != "dir":
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        if t == "dir":
            fd = sys.open(full, kernel.O_RDONLY | kernel.O_DIRECTORY)
            try:
                names = []
                while True:
                    batch = sys.getdents64(fd)
                    if not batch:
                        break
                    names.extend(d.d_name for d in batch if d.d_name not in (b".", b".."))
            finally:
                sys.close(fd)
            for name in sorted(os.fsdecode(n) for n in names):
                visit(name if rel == "." else rel + "/" + name)

    visit(".")
    return _finish(entries, inodes)


def project(m: dict[str, Entry], fields: tuple[str, ...] = DEFAULT_FIELDS,
            skip_root_mtime: bool = False) -> dict[str, Entry]:
    """Keep only ``fields`` (directory sizes are never compared)."""
    out = {}
    for p, e in m.items():
        d = {k: e.get(k) for k in fields}
        if e["type"] == "dir":
            d.pop("size", None)
        if skip_root_mtime and p == ".":
            d.pop("mtime_ns", None)
        out[p] = d
    return out


def diff_manifests(a: dict[str, Entry], b: dict[str, Entry], limit: int = 20) -> list[str]:
    out = []
    for p in sorted(set(a) | set(b)):
        if p not in a:
            out.append(f"only in second: {p}")
        elif p not in b:
            out.append(f"only in first: {p}")
        elif a[p] != b[p]:
            keys = sorted(k for k in set(a[p]) | set(b[p]) if a[p].get(k) != b[p].get(k))
            out.append(f"{p}: " + ", ".join(f"{k}: {a[p].get(k)!r} != {b[p].get(k)!r}" for k in keys))
        if len(out) >= limit:
            out.append("...")
            break
    return out


COMPRESS_ABOVE = 128 * 1024  # larger manifests are stored as <name>.json.zst


def save(m: dict[str, Entry], path: str | os.PathLike[str]) -> None:
    """Write a manifest as JSON; a large one zstd-compressed beside the plain name."""
    import zstandard

    text = (json.dumps(m, indent=0, sort_keys=True) + "\n").encode()
    path = Path(path)
    packed = path.with_name(path.name + ".zst")
    if len(text) > COMPRESS_ABOVE:
        packed.write_bytes(zstandard.ZstdCompressor(level=19).compress(text))
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(text)
        packed.unlink(missing_ok=True)


def load(path: str | os.PathLike[str]) -> dict[str, Entry]:
    """Read a manifest written by ``save`` (plain or compressed)."""
    import zstandard

    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    packed = path.with_name(path.name + ".zst")
    return json.loads(zstandard.ZstdDecompressor().decompress(packed.read_bytes()))
