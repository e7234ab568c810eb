"""fs2tar -j N: workers sharing one walk write the very archive one exporter writes.

Byte-for-byte equality with ``-j 1`` covers everything the other fs2tar tests check
of the archive (they run with the default, several workers); here: every kind of
image, compression, stdout, warnings and errors in their place, the end of the walk
in any worker, and a worker that dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run, sha256_file, unpack_image

IMAGES = ["ext4-features.img", "ext4-inline.img", "ext4-ext2.img", "btrfs-features.img",
          "xfs-v5.img", "xfs-v4.img", "ext4-largedir.img"]


def fs2tar(*args: str | os.PathLike[str], block: int = 8) -> subprocess.CompletedProcess[bytes]:
    """fs2tar with blocks of ``block`` entries, so that small images span many blocks and
    every worker writes some of each (0: the default size)."""
    env = {**os.environ, "FS2TAR_BLOCK": str(block)} if block else None
    return subprocess.run([sys.executable, "-m", "fstools.fs2tar", "--no-progress",
                           *map(os.fspath, args)], capture_output=True, env=env)


@pytest.mark.parametrize("name", IMAGES)
def test_same_archive_whatever_the_number_of_workers(tmp_path: Path, name: str) -> None:
    image = unpack_image(name, tmp_path)
    before = sha256_file(image)
    archives = {}
    for jobs in (1, 2, 3, 5):
        out = tmp_path / f"j{jobs}.tar"
        proc = fs2tar("-j", str(jobs), "-v", image, out)
        assert proc.returncode == 0, proc.stderr
        archives[jobs] = (out.read_bytes(), proc.stderr)
    assert len(archives[1][0]) > 10240
    for jobs in (2, 3, 5):
        assert archives[jobs][0] == archives[1][0], f"-j {jobs} wrote another archive"
        # -v lists every entry, in the archive's order, whoever wrote it
        assert archives[jobs][1] == archives[1][1]
    assert sha256_file(image) == before


def test_default_blocks_same_archive(tmp_path: Path) -> None:
    """With the default block size too (a 20,000-entry directory spans many blocks)."""
    from fstools.fs2tar.export import BLOCK

    image = unpack_image("ext4-largedir.img", tmp_path)
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"d{jobs}.tar"
        proc = fs2tar("-j", jobs, image, out, block=0)
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    names = subprocess.run(["tar", "-tf", str(tmp_path / "d2.tar")], capture_output=True,
                           check=True).stdout.splitlines()
    assert len(names) > 10 * BLOCK and outs[0] == outs[1]


def test_compressed_and_to_stdout(tmp_path: Path) -> None:
    image = unpack_image("ext4-features.img", tmp_path)
    for suffix in (".tar.zst", ".tar.gz"):
        outs = []
        for jobs in ("1", "3"):
            out = tmp_path / f"c{jobs}{suffix}"
            proc = fs2tar("-j", jobs, image, out)
            assert proc.returncode == 0, proc.stderr
            outs.append(out.read_bytes())
        if suffix == ".tar.gz":  # gzip's header holds the time of compression
            import gzip
            outs = [gzip.decompress(o) for o in outs]
        assert outs[0] == outs[1]
    piped = [fs2tar("-j", jobs, image, "-") for jobs in ("1", "2")]
    assert piped[0].returncode == piped[1].returncode == 0
    assert piped[0].stdout == piped[1].stdout
    names = subprocess.run(["tar", "-tf", "-"], input=piped[1].stdout, capture_output=True)
    assert names.returncode == 0 and b"./" in names.stdout.splitlines()


def test_selinux_lines_in_walk_order(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):  # several blocks of entries, so every worker writes some
        f = src / f"f{i:03d}"
        f.write_text(str(i))
        os.setxattr(f, "security.selinux", f"system_u:object_r:t{i}_t:s0\0".encode())
    image = tmp_path / "se.img"
    run("mkfs.ext4", "-q", "-F", "-d", src, image, "16M")
    texts = []
    for jobs in ("1", "4"):
        labels = tmp_path / f"labels{jobs}.txt"
        proc = fs2tar("-j", jobs, "-s", labels, image, tmp_path / f"se{jobs}.tar")
        assert proc.returncode == 0, proc.stderr
        texts.append(labels.read_text())
    assert texts[0] == texts[1]
    assert "/f123 system_u:object_r:t123_t:s0" in texts[1].splitlines()


@pytest.mark.parametrize("name", ["damaged-ext4-directory-loop.img", "damaged-ext4-name-with-nul.img",
                                  "damaged-ext4-extent-past-end.img",
                                  "damaged-ext4-directory-checksum.img"])
def test_damage_reported_alike(tmp_path: Path, name: str) -> None:
    """Errors and warnings come in their place: the same message, status and archive."""
    image = unpack_image(name, tmp_path)
    results = []
    for jobs in ("1", "2", "3"):
        for keep in ((), ("--keep-going",)):
            out = tmp_path / f"d{jobs}{len(keep)}.tar"
            proc = fs2tar("-j", jobs, *keep, image, out)
            assert b"Traceback" not in proc.stderr
            results.append((keep, proc.returncode, proc.stderr,
                            out.read_bytes() if out.exists() else None))
    for keep, code, err, data in results:
        ref = next(r for r in results if r[0] == keep)
        assert (code, err, data) == ref[1:], f"{keep}: {err!r} vs {ref[2]!r}"
    strict = [r for r in results if not r[0]]
    assert all(r[1] != 0 and r[3] is None for r in strict)  # no half archive left behind


def _workers(pid: int) -> list[int]:
    """The forked workers of ``pid`` (children running the same program)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        out = []
        for kid in kids:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if b"fstools.fs2tar" in f.read():
                    out.append(kid)
        return out
    except OSError:
        return []


@pytest.mark.parametrize("victim", ["worker", "walker"])
def test_a_dead_helper_is_one_line(tmp_path: Path, victim: str) -> None:
    """A worker or the walker killed mid-export: one line saying which, no archive left."""
    src = tmp_path / "src"
    for d in range(40):
        (src / f"d{d:02d}").mkdir(parents=True)
        for i in range(100):
            (src / f"d{d:02d}" / f"f{i:03d}").write_bytes(os.urandom(3000))
    image = tmp_path / "big.img"
    run("mkfs.ext4", "-q", "-F", "-d", src, image, "64M")
    out = tmp_path / "o.tar"
    proc = subprocess.Popen([sys.executable, "-m", "fstools.fs2tar", "--no-progress", "-j", "2",
                             image, out], stderr=subprocess.PIPE)
    children: list[int] = []
    deadline = time.monotonic() + 30
    while len(children) < 3 and time.monotonic() < deadline and proc.poll() is None:
        children = sorted(_workers(proc.pid))  # two workers, then the walker (forked last)
        time.sleep(0.002)
    if len(children) < 3:
        pytest.fail("fs2tar finished before a helper could be killed")
    os.kill(children[0] if victim == "worker" else children[-1], signal.SIGKILL)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "ended unexpectedly" in lines[0] and "signal 9" in lines[0], err
    assert ("walker" in lines[0]) == (victim == "walker"), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_full_disk_and_closed_pipe(tmp_path: Path, jobs: str) -> None:
    """A full output filesystem is one line with the reason, and no archive is left; a reader
    that goes away (| head) ends the export quietly."""
    from helpers import need_root

    need_root()
    image = unpack_image("ext4-features.img", tmp_path)
    small = tmp_path / "small"
    small.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=64k", "fs2tar-full", small)
    try:
        proc = fs2tar("-j", jobs, image, small / "o.tar")
    finally:
        run("umount", small)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "o.tar" in lines[0] and "No space left on device" in lines[0]
    assert not (small / "o.tar").exists()
    cmd = [sys.executable, "-m", "fstools.fs2tar", "--no-progress", "-j", jobs, str(image), "-"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    assert len(p.stdout.read(1000)) == 1000
    p.stdout.close()  # the reader goes away
    err = p.stderr.read() if p.stderr else b""
    assert p.wait(timeout=60) == 1
    assert err == b"", err


def test_appending_stdout_and_device_outputs(tmp_path: Path) -> None:
    """Standard output opened for appending gets the archive after what it held (whether
    or not the kernel splices into such a file); a device named as the output gets the
    archive written through libarchive, and is not removed when the export fails."""
    from helpers import need_root

    image = unpack_image("ext4-features.img", tmp_path)
    want = fs2tar("-j", "1", image, "-").stdout
    out = tmp_path / "appended"
    out.write_bytes(b"before")
    with open(out, "ab") as f:
        proc = subprocess.run([sys.executable, "-m", "fstools.fs2tar", "--no-progress",
                               "-j", "2", image, "-"], stdout=f, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"before" + want

    need_root()
    null = tmp_path / "null"
    os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
    assert fs2tar("-j", "2", image, null).returncode == 0
    damaged = unpack_image("damaged-ext4-directory-loop.img", tmp_path)
    proc = fs2tar("-j", "2", damaged, null)
    assert proc.returncode != 0 and b"loop" in proc.stderr, proc.stderr
    assert null.exists() and null.is_char_device()
