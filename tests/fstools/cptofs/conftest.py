"""Fixtures of the cptofs/cpfromfs tests: the tools as subprocesses, tmpfs scratch
directories (they hold xattrs of any namespace and size), and the rich source tree."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import need_root, need_tool, run

RUNNER = ("import sys; from fstools.cptofs.__main__ import {fn} as main; "
          "sys.argv[0] = '{prog}'; main()")

# one timestamp family for the rich tree: nanoseconds, before 1970 and after 2038
STAMP = 1_600_000_000_123_456_789
T2100 = 4102444800_987654321
BEFORE_1970 = -1_000_000_000 - 123_456_789


def _tool(prog: str) -> Callable[..., subprocess.CompletedProcess]:
    fn = "cptofs_main" if prog == "cptofs" else "cpfromfs_main"

    def call(*args: str | os.PathLike[str], check: bool = True, user: int | None = None,
             **kw: object) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", RUNNER.format(fn=fn, prog=prog), *map(os.fspath, args)]
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        proc = subprocess.run(cmd, capture_output=True, **kw)  # type: ignore[call-overload]
        if check and proc.returncode != 0:
            raise AssertionError(f"{prog} {' '.join(map(os.fspath, args))} failed "
                                 f"({proc.returncode}): {proc.stderr.decode()}")
        assert b"Traceback" not in proc.stderr, proc.stderr.decode()
        return proc

    return call


@pytest.fixture
def cptofs() -> Callable[..., subprocess.CompletedProcess]:
    """``cptofs(*args, check=True)``: run the tool; a failure shows its stderr."""
    return _tool("cptofs")


@pytest.fixture
def cpfromfs() -> Callable[..., subprocess.CompletedProcess]:
    return _tool("cpfromfs")


class _Tmpfs:
    def __init__(self) -> None:
        self.mounts: list[Path] = []

    def __call__(self, where: Path, size: str = "1g") -> Path:
        """A tmpfs at ``where`` (root); a plain directory otherwise."""
        where.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            run("mount", "-t", "tmpfs", "-o", f"size={size},mode=755", "cptofs-test", where)
            self.mounts.append(where)
        return where

    def cleanup(self) -> None:
        while self.mounts:
            run("umount", "-l", self.mounts.pop(), check=False)


@pytest.fixture
def tmpfs() -> Iterator[_Tmpfs]:
    t = _Tmpfs()
    try:
        yield t
    finally:
        t.cleanup()


def make_rich_tree(root: Path, big: int = 5000, depth: int = 40) -> None:
    """Every file type, modes, owners, ns times, xattrs of each namespace, ACLs, hard
    links, sparse files, long and unicode names, a ``big``-entry directory and
    ``depth``-level nesting. Needs root (owners, devices, trusted.*)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello, image\n")
    (root / "data.bin").write_bytes(os.urandom(3 << 20) + b"tail")  # more than one chunk
    with open(root / "sparse", "wb") as f:  # holes at the start, middle and end
        f.seek(300_000)
        f.write(b"in the middle" * 1000)
        f.seek(6_000_000)
        f.write(b"later")
        f.truncate(9_000_000)
    with open(root / "all-hole", "wb") as f:
        f.truncate(1 << 20)
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "leaf").write_text("leaf\n")
    (root / "dir" / "hardlink2").write_text("")  # replaced by a link below
    os.unlink(root / "dir" / "hardlink2")
    os.link(root / "small.txt", root / "dir" / "hardlink2")
    os.link(root / "small.txt", root / "hardlink")
    os.symlink("small.txt", root / "fastlink")
    os.symlink("/" + "/".join(["long-component"] * 60), root / "longlink")
    os.symlink("../../../../../../etc/passwd", root / "dir" / "uplink")
    os.symlink("dangling-nowhere", root / "dangling")
    os.symlink("fastlink", root / "hardlinked-symlink")
    os.link(root / "hardlinked-symlink", root / "dir" / "symlink-link", follow_symlinks=False)
    os.mknod(root / "chr", 0o620 | 0o020000, os.makedev(4, 7))
    os.mknod(root / "blk", 0o660 | 0o060000, os.makedev(259, 70000))
    os.mkfifo(root / "fifo", 0o640)
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.fspath(root / "socket"))
    s.close()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2711), ("nomode", 0o000),
                       ("sticky-dir", 0o1777), ("sgid-dir", 0o2770), ("closed-dir", 0o500)):
        p = root / name
        if name.endswith("dir"):
            p.mkdir()
            (p / "inside").write_text(name)
        else:
            p.write_text(name)
        os.chmod(p, mode)
    os.chown(root / "small.txt", 1000, 1000)
    os.chown(root / "data.bin", 100000, 4000000000)  # 32-bit ids
    os.lchown(root / "fastlink", 4242, 4343)
    os.chown(root / "sticky-dir", 12, 34)
    # extended attributes of each namespace, and ACLs
    os.setxattr(root / "small.txt", "user.comment", b"a small file")
    os.setxattr(root / "small.txt", "trusted.t", b"\x00\x01binary")
    os.setxattr(root / "dir", "security.label", b"system_u:object_r:etc_t:s0\0")
    os.setxattr(root / "data.bin", "user.big", b"v" * 1500)
    os.setxattr(root / "data.bin", "user.empty", b"")
    os.setxattr(root / "fastlink", "trusted.on-a-symlink", b"yes", follow_symlinks=False)
    run("setfacl", "-m", "u:1234:rwx,g:55:r,m:rwx", root / "data.bin")
    run("setfacl", "-d", "-m", "u::rwx,g::r-x,o::---,u:99:rw", root / "dir" / "sub")
    # names: the longest one, unicode, spaces and odd bytes
    (root / ("L" * 255)).write_text("longest name")
    (root / "ünïcödé-名前-😀").write_text("unicode")
    (root / "with space, and 'quotes'").write_text("odd")
    os.mkdir(os.fsencode(root) + b"/latin1-\xe9\xff")
    # nesting
    p = root / "deep"
    for i in range(depth):
        p = p / f"level{i:02d}"
    p.mkdir(parents=True)
    (p / "bottom").write_text("at the bottom\n")
    # a big directory of distinct files
    if big:
        d = root / "big"
        d.mkdir()
        for i in range(big):
            (d / f"entry-{i:05d}-{'n' * (i % 29)}").write_bytes(b"%d\n" % i)
    # times last: creating entries changes directory times
    for i, (dirpath, dirnames, filenames) in enumerate(sorted(os.walk(root), reverse=True)):
        for n in [*dirnames, *filenames, ""]:
            q = os.path.join(dirpath, n) if n else dirpath
            os.utime(q, ns=(STAMP + i * 1_000_001, STAMP + i * 7_777_777), follow_symlinks=False)
    os.utime(root / "data.bin", ns=(T2100, T2100))
    os.utime(root / "empty", ns=(BEFORE_1970, BEFORE_1970))


@pytest.fixture(scope="session")
def rich_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The rich tree, built once on a tmpfs; tests must not change it."""
    need_root()
    need_tool("setfacl", "setpriv")
    base = tmp_path_factory.mktemp("cptofs-rich")
    t = _Tmpfs()
    where = t(base / "fs")
    try:
        make_rich_tree(where / "tree")
        yield where / "tree"
    finally:
        t.cleanup()
