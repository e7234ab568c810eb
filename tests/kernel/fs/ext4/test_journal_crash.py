"""Crash safety: a writer killed with SIGKILL at random points leaves an image that e2fsck
and our kernel both recover by journal replay, consistent, with every fsync'ed file intact."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ext4util import read_file
from helpers import ROOT, need_tool, run

import kernel
from kernel import Kernel

HERE = Path(__file__).resolve().parent
TRIALS = int(os.environ.get("CRASH_TRIALS", "30"))
LAYOUTS = [["-t", "ext4"], ["-t", "ext4", "-b", "1024", "-O", "^64bit"], ["-t", "ext3"],
           ["-t", "ext4", "-O", "^metadata_csum"]]


def _sb(k: Kernel, path: str):
    res, _ = k.sys._resolve(kernel.AT_FDCWD, path, True)
    return res.mnt.sb


def _check(tmp_path: Path, img: Path, record: Path, trial: int) -> int:
    """Recover with e2fsck (a copy) and with our kernel; the number of transactions ours
    replayed."""
    durable = [line.split() for line in record.read_text().splitlines()] \
        if record.exists() else []
    copy = tmp_path / "copy.img"
    shutil.copyfile(img, copy)
    fix = subprocess.run(["e2fsck", "-fy", str(copy)], capture_output=True, text=True)
    assert fix.returncode in (0, 1), fix.stdout
    assert "? yes" not in fix.stdout, f"trial {trial}: e2fsck fixed more than the replay:\n" \
        + fix.stdout
    check = subprocess.run(["e2fsck", "-fn", str(copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    with Kernel(mb=32) as k:
        root = k.mount_dev(k.disk_add(img, readonly=False))
        info = _sb(k, root).recovery
        for name, sha in durable:
            assert hashlib.sha256(read_file(k.sys, f"{root}/{name}")).hexdigest() == sha, \
                f"trial {trial}: {name}"
    check = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    return info.transactions if info is not None else 0


def _start(img: Path, record: Path, trial: int, layout: list[str], **env: str) -> subprocess.Popen:
    with open(img, "wb") as f:
        f.truncate(96 << 20)
    run("mke2fs", "-q", "-F", "-J", "size=4", *layout, img)
    return subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), str(img), str(record),
                             str(trial)], env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
                            stderr=subprocess.PIPE)


@pytest.mark.parametrize("layout", LAYOUTS, ids=["ext4", "ext4-1k-32bit", "ext3", "ext4-nocsum"])
def test_committed_transaction_is_replayed(tmp_path: Path, layout: list[str]) -> None:
    """Dying between a commit block and its checkpoint leaves the transaction only in the
    log: e2fsck replays it and so does our kernel, and both give the same consistent tree."""
    need_tool("mke2fs", "e2fsck")
    img, record = tmp_path / "r.img", tmp_path / "r.rec"
    proc = _start(img, record, 7, layout, CRASH_AFTER_COMMITS="4")
    assert proc.wait(timeout=120) == 9, proc.stderr.read().decode() if proc.stderr else ""
    assert "needs_recovery" in run("dumpe2fs", "-h", img).stdout
    assert _check(tmp_path, img, record, 0) == 1


@pytest.mark.slow
def test_sigkill_at_random_points(tmp_path: Path) -> None:
    need_tool("mke2fs", "e2fsck")
    rnd = random.Random(int(os.environ.get("CRASH_SEED", "2026")))
    for trial in range(TRIALS):
        img, record = tmp_path / f"c{trial}.img", tmp_path / f"c{trial}.rec"
        proc = _start(img, record, trial, LAYOUTS[trial % len(LAYOUTS)])
        time.sleep(0.8 + rnd.random() * 2.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
        _check(tmp_path, img, record, trial)
        img.unlink()
