"""Every tool on every damaged image (tests/images/make_damaged.py): one line per error naming
the image or the path and the reason, a non-zero exit (or, with --keep-going, the rest
exported), no traceback, no hang, nothing written outside the destination, and the image
unchanged."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzzwalk import walk
from helpers import IMAGES, ROOT, need_tool, sha256_file, unpack_image

import kernel
from kernel import Kernel

INFO = json.loads((IMAGES / "damaged.json").read_text())
NAMES = sorted(INFO)
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def tool(prog: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    mod = {"fs2tar": "fstools.fs2tar", "lklfuse": "fstools.lklfuse"}.get(prog)
    if mod is not None:
        cmd = [sys.executable, "-m", mod]
    else:
        fn = "cpfromfs_main"
        cmd = [sys.executable, "-c", f"import sys; from fstools.cptofs.__main__ import {fn} as m; "
               f"sys.argv[0] = '{prog}'; m()"]
    proc = subprocess.run(cmd + [os.fspath(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line_per_error(proc: subprocess.CompletedProcess, prog: str, image: Path) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(f"{prog}: ")]
    assert errors, proc.stderr
    # an error names the image or the path in it
    assert any(str(image) in ln or "/" in ln for ln in errors), proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_kernel_walk_fails_cleanly(tmp_path: Path, name: str) -> None:
    image = unpack_image(f"damaged-{name}.img", tmp_path)
    before = sha256_file(image)
    seen, errs = walk(str(image))  # any exception but OSError fails the test
    if INFO[name]["fatal"]:
        assert seen == 0 and errs, errs
    else:
        assert seen > 0
    assert sha256_file(image) == before


@pytest.mark.parametrize("name", NAMES)
def test_fs2tar(tmp_path: Path, name: str) -> None:
    need_tool("tar")
    image = unpack_image(f"damaged-{name}.img", tmp_path)
    before = sha256_file(image)
    out = tmp_path / "out.tar"
    proc = tool("fs2tar", image, out)
    if INFO[name]["fatal"]:
        assert proc.returncode == 1, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        one_line_per_error(proc, "fs2tar", image)
    elif proc.returncode != 0:
        assert proc.returncode == 1
        one_line_per_error(proc, "fs2tar", image)
        # --keep-going exports the rest and says what it skipped
        proc = tool("fs2tar", "--keep-going", image, out)
        assert proc.returncode == 3, proc.stderr
        listing = subprocess.run(["tar", "-tf", out], capture_output=True, text=True)
        assert listing.returncode == 0 and "./other" in listing.stdout
    else:
        subprocess.run(["tar", "-tf", out], check=True, capture_output=True)
    assert sha256_file(image) == before


@pytest.mark.parametrize("name", NAMES)
def test_cpfromfs(tmp_path: Path, name: str) -> None:
    image = unpack_image(f"damaged-{name}.img", tmp_path)
    before = sha256_file(image)
    dest = tmp_path / "box" / "out"
    dest.parent.mkdir()
    proc = tool("cpfromfs", "-i", image, "--keep-going", "/", dest)
    if INFO[name]["fatal"]:
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        one_line_per_error(proc, "cpfromfs", image)
    else:
        assert proc.returncode in (0, 3), proc.stderr
        if proc.returncode == 3:
            one_line_per_error(proc, "cpfromfs", image)
        assert (dest / "other").exists()
    # nothing lands outside the destination, whatever names the image holds
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) in ([], ["out"])
    assert sha256_file(image) == before


@pytest.mark.fuse
@pytest.mark.parametrize("name", [n for n in NAMES if INFO[n]["fatal"]])
def test_lklfuse_refuses_before_mounting(tmp_path: Path, name: str) -> None:
    image = unpack_image(f"damaged-{name}.img", tmp_path)
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = tool("lklfuse", image, mnt, "-o", "ro")
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(image) in proc.stderr
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize("name,bad", [("ext4-name-with-slash", b"file/7"),
                                      ("ext4-name-with-nul", b"file\x007")])
def test_getdents_reports_a_bad_name_and_reads_on(tmp_path: Path, name: str, bad: bytes) -> None:
    """A name holding '/' or NUL: getdents stops before it, then fails with EUCLEAN naming
    it (Linux's verify_dirent_name), then goes on with the rest of the directory."""
    image = unpack_image(f"damaged-{name}.img", tmp_path)
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(image, readonly=True), flags=kernel.MS_RDONLY)
        fd = k.sys.open(f"{root}/a", kernel.O_RDONLY | kernel.O_DIRECTORY)
        names, errors = [], []
        for _ in range(100):
            try:
                batch = k.sys.getdents64(fd, 1 << 16)
            except OSError as e:
                errors.append((e.errno, getattr(e, "dirent_name", None)))
                continue
            if not batch:
                break
            names += [d.d_name for d in batch]
        assert errors == [(errno.EUCLEAN, bad)]
        want = {f"file{i:02d}".encode() for i in range(20)} - {b"file07"} | {b".", b"..", b"b"}
        assert set(names) == want
