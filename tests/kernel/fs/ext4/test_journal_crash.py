"""Crash safety: a writer killed with SIGKILL at random points leaves an image that e2fsck
and our kernel both recover by journal replay, consistent, with every fsync'ed file intact."""

from __future__ import annotations

import contextlib
import errno
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
    # the writer dies by patching the journal's commit: on the Python modules (compiled
    # ones bind their calls when built); what it leaves is mounted here, compiled or not
    env = dict(os.environ, PYTHONPATH=str(ROOT), LKL_NATIVE="0", **env)
    return subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), str(img), str(record),
                             str(trial)], env=env,
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
    assert _check(tmp_path, img, record, 0) >= 1


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


@pytest.mark.python_modules
@pytest.mark.parametrize("commit_the_free", [True, False], ids=["committed", "committed-at-enospc"])
def test_a_freed_block_of_the_log_is_never_written_over_its_reuse(tmp_path: Path, monkeypatch,
                                                                  commit_the_free: bool) -> None:
    """An extent block committed to the log, then freed with its file and taken for another
    file while the log is lazy (after the free commits, or when the allocator runs out and
    the write commits the free to go on): neither the checkpoint nor a replay
    after a crash may put the old extent block over that data (jbd2 writes revoke
    records; we empty the log before such a block can be reused)."""
    from kernel.fs.ext4 import alloc
    from kernel.fs.ext4.extents import tree_blocks

    monkeypatch.setattr(alloc, "METADATA_RESERVE", 0)  # data may take every freed block

    need_tool("mke2fs", "e2fsck")
    img = tmp_path / "f.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    run("mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-J", "size=1", img)
    crash = tmp_path / "crash.img"
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(img, readonly=False))
        s = k.sys
        fd = s.open(f"{root}/frag", kernel.O_CREAT | kernel.O_WRONLY, 0o644)
        for i in range(40):  # every other block: 40 extents, an extent block
            s.pwrite(fd, b"x" * 1024, 2048 * i)
        s.fsync(fd)
        leaf = tree_blocks(s._file(fd).inode)
        assert leaf
        s.close(fd)
        writer = _sb(k, root).journal
        assert set(leaf) <= set(writer.live)  # committed, not yet home
        s.unlink(f"{root}/frag")
        if commit_the_free:
            s.sync()
        # fill the filesystem: the freed blocks, the extent block among them, take data;
        # a crash where the log is next emptied, and one when the fill is durable
        early = tmp_path / "early.img"
        real_checkpoint = writer.checkpoint

        def crash_then_checkpoint() -> None:
            if not early.exists():
                shutil.copyfile(img, early)
            real_checkpoint()

        writer.checkpoint = crash_then_checkpoint
        fd = s.open(f"{root}/fill", kernel.O_CREAT | kernel.O_WRONLY, 0o644)
        body = bytearray()
        while True:
            chunk = hashlib.sha256(str(len(body)).encode()).digest() * 32
            try:
                n = s.write(fd, chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
            body += chunk[:n]
        s.fsync(fd)
        inode = s._file(fd).inode
        taken = {b for _l, n, p, _u in inode.runs() for b in range(p, p + n)}
        taken |= set(tree_blocks(inode))
        assert set(leaf) & taken  # the extent block holds the new file's data or extents
        shutil.copyfile(img, crash)  # a crash now: whatever the log holds is replayed
        s.close(fd)
    for image in (img, crash, early):
        with Kernel(mb=16) as k:
            root = k.mount_dev(k.disk_add(image, readonly=False))
            got = b""
            with contextlib.suppress(FileNotFoundError):
                got = read_file(k.sys, f"{root}/fill")
            # what a replay restores of the file is what was written, never old metadata
            assert got == bytes(body[:len(got)]), image.name
            assert image is early or len(got) == len(body), image.name
        check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


def _fill(s, path: str, seed: str) -> bytes:
    """Write ``path`` until the filesystem is full; what it holds. A write falls short
    only when the next one finds no space."""
    fd = s.open(path, kernel.O_CREAT | kernel.O_WRONLY, 0o644)
    body = bytearray()
    short = False
    while True:
        # 64 KiB: the space runs out inside one
        chunk = hashlib.sha256(f"{seed}{len(body)}".encode()).digest() * 2048
        try:
            n = s.write(fd, chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC
            break
        assert not short, "a short write, though there was space"
        short = n < len(chunk)
        body += chunk[:n]
    s.fsync(fd)
    s.close(fd)
    return bytes(body)


@pytest.mark.python_modules
def test_a_deleted_file_keeps_its_data_until_the_delete_commits(tmp_path: Path) -> None:
    """On a full image a file is deleted and another written into the space it leaves,
    before the delete commits. The data waits for that commit (the write commits and goes
    on, as Linux's does): a crash at any commit, its data written and its record not,
    shows the first file whole or gone, never holding the second file's data."""
    need_tool("mke2fs", "e2fsck")
    img = tmp_path / "f.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    run("mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-J", "size=1", img)
    crashes: list[Path] = []
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(img, readonly=False))
        s = k.sys
        fd = s.open(f"{root}/pad", kernel.O_CREAT | kernel.O_WRONLY, 0o644)
        s.write(fd, b"p" * 100_000)
        s.close(fd)
        old = _fill(s, f"{root}/old", "old")
        assert len(old) > 4 << 20
        s.unlink(f"{root}/pad")
        s.sync()  # 100 KB free, then the delete: a write falls short but for it
        s.unlink(f"{root}/old")
        writer = _sb(k, root).journal
        real_commit = writer.commit

        def crash_then_commit() -> None:
            crash = tmp_path / f"crash{len(crashes)}.img"
            writer.dev.drain()  # (a copy while writes land would tear them)
            shutil.copyfile(img, crash)
            crashes.append(crash)
            real_commit()

        writer.commit = crash_then_commit
        new = _fill(s, f"{root}/new", "new")
        assert len(new) > len(old) // 2  # the write went on into the space the delete left
    assert crashes
    for image in (img, *crashes):
        with Kernel(mb=16) as k:
            root = k.mount_dev(k.disk_add(image, readonly=False))
            try:
                got = read_file(k.sys, f"{root}/old")
            except FileNotFoundError:
                pass
            else:
                assert got == old, image.name
                assert image is not img
        check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


def test_fsync_returns_when_the_file_is_on_the_image(tmp_path: Path) -> None:
    """Data and commits go to the image behind the writer; fsync waits for them: the image
    copied the moment it returns (a crash then) recovers to the whole file."""
    need_tool("mke2fs", "e2fsck")
    img = tmp_path / "s.img"
    with open(img, "wb") as f:
        f.truncate(96 << 20)
    run("mke2fs", "-q", "-F", "-t", "ext4", "-J", "size=4", img)
    data = random.Random(5).randbytes(40 << 20)
    with Kernel(mb=64) as k:
        disk = k.disk_add(img, readonly=False)
        root = k.mount_dev(disk)
        s = k.sys
        fd = s.open(f"{root}/big", kernel.O_CREAT | kernel.O_WRONLY, 0o644)
        s.write(fd, data)
        s.fsync(fd)
        behind = disk.gendisk._behind
        assert behind is not None and not behind.pending  # it did issue behind, and waited
        crash = tmp_path / "crash.img"
        shutil.copyfile(img, crash)
        s.close(fd)
    fix = subprocess.run(["e2fsck", "-fy", str(crash)], capture_output=True, text=True)
    assert fix.returncode in (0, 1), fix.stdout
    with Kernel(mb=16) as k:
        root = k.mount_dev(k.disk_add(crash))
        assert hashlib.sha256(read_file(k.sys, f"{root}/big")).digest() == \
            hashlib.sha256(data).digest()
