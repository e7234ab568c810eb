"""The measured workloads: ours against the host kernel and peer tools, same data, same run.

Every contender is a shell command timed as a whole (wall clock), median of
N runs after a warm-up; mounts and unmounts are part of the host kernel's
time because our tools mount and unmount too. Archives and copies are piped
or written for real (GNU tar skips reading files when its archive is
/dev/null, so its output goes through ``cat``). Our peak memory comes from
the child's rusage: the largest of our processes (fs2tar's workers, lklfuse
run in the foreground and waited for).
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import ENV, Datasets, is_root

PY = shlex.quote(sys.executable)
BIN = Path(sys.executable).parent  # the virtual environment's console scripts
FSTOOL = {name: shlex.quote(str(BIN / name)) for name in ("fs2tar", "lklfuse", "cptofs", "cpfromfs")}


@dataclass
class Row:
    who: str
    seconds: float | None = None
    rss_mb: float | None = None
    note: str = ""
    reference: bool = False  # the host kernel: ratios are against this row


@dataclass
class Result:
    name: str
    fs: str | None
    rows: list[Row] = field(default_factory=list)

    def reference(self) -> Row | None:
        return next((r for r in self.rows if r.reference and r.seconds), None)

    def ratio(self, row: Row) -> float | None:
        """Against the reference row that heads the row's group (the last one before it)."""
        ref = None
        for r in self.rows:
            if r is row:
                break
            if r.reference and r.seconds:
                ref = r
        if ref is None or ref.seconds is None or row.seconds is None or row.reference:
            return None
        return row.seconds / ref.seconds

    def lines(self) -> list[str]:
        out = []
        for r in self.rows:
            if r.seconds is None:
                out.append(f"{r.who:<34} n/a  ({r.note})")
                continue
            x = self.ratio(r)
            ratio = f"  x{x:5.2f}" if x is not None else ""
            mem = f"  {r.rss_mb:6.0f} MB" if r.rss_mb is not None else ""
            out.append(f"{r.who:<34} {r.seconds:8.2f} s{ratio}{mem}{'  ' + r.note if r.note else ''}")
        return out

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "fs": self.fs, "rows": [
            {"who": r.who, "seconds": r.seconds, "rss_mb": r.rss_mb, "note": r.note,
             "reference": r.reference, "ratio": self.ratio(r)}
            for r in self.rows]}


def timed(cmd: str, setup: Callable[[], None] | None = None,
          teardown: Callable[[], None] | None = None, repeat: int = 3,
          cwd: str | None = None, warm_up: bool = True) -> tuple[float | None, float | None, str]:
    """Median wall time and peak RSS (MB) of ``cmd`` (bash), after one warm-up run unless
    ``warm_up`` is False (a contender slow enough that the page cache cannot matter)."""
    times, rss = [], []
    for i in range(0 if warm_up else 1, repeat + 1):
        if setup:
            setup()
        t = time.perf_counter()
        proc = subprocess.Popen(["bash", "-o", "pipefail", "-c", cmd], env=ENV, cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
        if teardown:
            teardown()
        if proc.returncode != 0:
            first = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            return None, None, first[:120]
        if i == 0:
            continue  # warm-up: the image is now in the host's page cache for everyone
        times.append(elapsed)
        rss.append(usage.ru_maxrss / 1024)
    return statistics.median(times), max(rss), ""


def _available(tool: str) -> str | None:
    r = subprocess.run(["bash", "-c", f"{FSTOOL[tool]} --help"], capture_output=True, text=True,
                       env=ENV)
    if r.returncode != 0 or "not yet available" in r.stderr:
        return f"{tool} not built yet"
    return None


class Workload:
    name = ""
    per_fs = True

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        raise NotImplementedError


def _mnt(data: Datasets, tag: str) -> Path:
    m = data.work / f"mnt-{tag}"
    m.mkdir(exist_ok=True)
    return m


def _datasets(data: Datasets, fs: str | None) -> list[tuple[str, Path]]:
    """The trees exported and copied out: the /usr/share copy, and the Debian root (device
    nodes, hard links, setuid files) when debootstrap made one."""
    out = []
    for name, label in (("tree", ""), ("debian", " (debian)")):
        img = data.images.get((fs, name))  # type: ignore[arg-type]
        if img is not None:
            out.append((label, img))
    return out


class Fs2tar(Workload):
    name = "fs2tar: tree to a tar stream"

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        res = Result(self.name, fs)
        sets = _datasets(data, fs)
        if not sets:
            res.rows.append(Row("ours (fs2tar)", note="no image"))
            return res
        for label, img in sets:
            q = shlex.quote(str(img))
            mnt = _mnt(data, "k")
            if is_root():
                s, _m, note = timed(f"mount -o loop,ro {q} {mnt} && (cd {mnt} && tar -cf - . | "
                                    f"cat >/dev/null); umount {mnt}", repeat=repeat)
                res.rows.append(Row(f"host kernel: loop mount + tar{label}", s, note=note,
                                    reference=True))
            else:
                res.rows.append(Row(f"host kernel: loop mount + tar{label}", note="needs root",
                                    reference=True))
            s, m, note = timed(f"{FSTOOL['fs2tar']} --no-progress {q} - | cat >/dev/null",
                               repeat=repeat)
            res.rows.append(Row(f"ours: fs2tar{label}", s, m, note))
            dissect = Dissect.command(data, fs, img)
            if dissect is None:
                res.rows.append(Row(f"dissect.{_dissect_name(fs)}{label}", note=Dissect.why))
            else:
                s, _m, note = timed(dissect, repeat=repeat)
                res.rows.append(Row(f"dissect.{_dissect_name(fs)}{label}", s, note=note))
        return res


def _dissect_name(fs: str | None) -> str:
    return "extfs" if fs == "ext4" else str(fs)


class Cpfromfs(Workload):
    name = "cpfromfs: tree out of the image"

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        res = Result(self.name, fs)
        out = data.work / "out"

        def clean() -> None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()

        sets = _datasets(data, fs)
        if not sets:
            res.rows.append(Row("ours (cpfromfs)", note="no image"))
            return res
        missing = _available("cpfromfs")
        for label, img in sets:
            q = shlex.quote(str(img))
            mnt = _mnt(data, "k")
            if is_root():
                s, _m, note = timed(f"mount -o loop,ro {q} {mnt} && cp -a {mnt}/. {out}/; "
                                    f"umount {mnt}", setup=clean, repeat=repeat)
                res.rows.append(Row(f"host kernel: loop mount + cp -a{label}", s, note=note,
                                    reference=True))
            if missing:
                res.rows.append(Row(f"ours: cpfromfs{label}", note=missing))
                continue
            s, m, note = timed(f"{FSTOOL['cpfromfs']} -i {q} / {out}", setup=clean,
                               repeat=repeat)
            res.rows.append(Row(f"ours: cpfromfs{label}", s, m, note))
        return res


def _through_mount(server: str, mnt: Path, cmd: str) -> str:
    """Serve a FUSE mount at ``mnt`` in the foreground, run ``cmd`` once it is up, then
    unmount and wait for the server to exit (its writes are done when it is)."""
    return (f"{server} & pid=$!; for i in $(seq 100); do mountpoint -q {mnt} && break; "
            f"sleep 0.05; done && {cmd}; fusermount3 -u {mnt}; wait $pid")


@dataclass
class _CopyIn:
    """A workload copying the tree into an empty ext4, made again for every run
    (``fresh``); its result is headed by the host kernel's loop mount + ``cp -a`` +
    umount."""

    res: Result
    src: Path
    img: Path
    size: int
    mnt: Path

    @classmethod
    def start(cls, data: Datasets, name: str, repeat: int, size: int | None = None,
              tag: str = "copy-in") -> _CopyIn:
        """``size``: the image's (sparse) size, by default what the tree needs."""
        src = data.trees["tree"]
        c = cls(Result(name, "ext4"), src, data.work / f"{tag}.ext4.img",
                size or data._size_for(src), _mnt(data, "w"))
        if is_root():
            q, qs = shlex.quote(str(c.img)), shlex.quote(str(src))
            # noinit_itable: no background zeroing of inode tables (it would fill a sparse
            # image with gigabytes of zeros while it is timed)
            s, _m, note = timed(f"mount -o loop,noinit_itable {q} {c.mnt} && "
                                f"cp -a {qs}/. {c.mnt}/ && umount {c.mnt}", setup=c.fresh,
                                repeat=repeat)
            c.res.rows.append(Row("host kernel: loop mount + cp -a + umount", s, note=note,
                                  reference=True))
        return c

    def fresh(self, *options: str) -> None:
        """An empty ext4 of ``size`` bytes (sparse) at ``img``; ``options`` for mkfs.ext4."""
        with open(self.img, "wb") as f:
            f.truncate(self.size)
        subprocess.run(["mkfs.ext4", "-q", "-F", *options, str(self.img)], check=True, env=ENV)


class Cptofs(Workload):
    name = "cptofs: tree into an empty ext4 image"
    per_fs = False

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        c = _CopyIn.start(data, self.name, repeat)
        res, img, size = c.res, c.img, c.size
        q, qs = shlex.quote(str(img)), shlex.quote(str(c.src))
        s, _m, note = timed(f"truncate -s {size} {q} && mkfs.ext4 -q -F -d {qs} {q}",
                            setup=lambda: img.unlink(missing_ok=True), repeat=repeat)
        res.rows.append(Row("mkfs.ext4 -d (includes mkfs)", s, note=note))
        missing = _available("cptofs")
        if missing:
            res.rows.append(Row("ours: cptofs", note=missing))
            return res
        s, m, note = timed(f"cd {qs} && {FSTOOL['cptofs']} -i {q} . /", setup=c.fresh,
                           repeat=repeat)
        res.rows.append(Row("ours: cptofs", s, m, note))

        def fresh_nojournal() -> None:
            c.fresh("-O", "^has_journal")

        # what the journal costs: the same copy into an ext4 made without one
        s, m, note = timed(f"cd {qs} && {FSTOOL['cptofs']} -i {q} . /", setup=fresh_nojournal,
                           repeat=repeat)
        res.rows.append(Row("ours: cptofs, ext4 without a journal", s, m, note))
        return res


class CptofsBig(Workload):
    """What users copy into most: a VM disk, large and sparse (8,192 block groups), where
    the time must not grow with the size of the image."""

    name = "cptofs: tree into an empty sparse 1 TiB ext4 image"
    per_fs = False

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        c = _CopyIn.start(data, self.name, repeat, size=1 << 40, tag="copy-in-1t")
        try:
            missing = _available("cptofs")
            if missing:
                c.res.rows.append(Row("ours: cptofs", note=missing))
                return c.res
            q, qs = shlex.quote(str(c.img)), shlex.quote(str(c.src))
            s, m, note = timed(f"cd {qs} && {FSTOOL['cptofs']} -i {q} . /", setup=c.fresh,
                               repeat=repeat)
            c.res.rows.append(Row("ours: cptofs", s, m, note))
        finally:
            c.img.unlink(missing_ok=True)  # a gigabyte of journal and tables on the disk
        return c.res


class Lklfuse(Workload):
    name = "lklfuse: cat of the big file, tar of the tree"

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        res = Result(self.name, fs)
        for what, dataset, cmd in (("cat big file", "big", "cat random.bin >/dev/null"),
                                   ("tar tree", "tree", "tar -cf - . | cat >/dev/null")):
            img = data.images.get((fs, dataset))  # type: ignore[arg-type]
            if img is None:
                continue
            q = shlex.quote(str(img))
            mnt = _mnt(data, "f")
            if is_root():
                s, _m, note = timed(f"mount -o loop,ro {q} {mnt} && (cd {mnt} && {cmd}); "
                                    f"umount {mnt}", repeat=repeat)
                res.rows.append(Row(f"host kernel ({what})", s, note=note, reference=True))
            missing = _available("lklfuse")
            if missing:
                res.rows.append(Row(f"ours: lklfuse ({what})", note=missing))
            else:
                # in the foreground, waited for: its peak memory is in the rusage
                s, m, note = timed(_through_mount(f"{FSTOOL['lklfuse']} {q} {mnt} -o ro -f", mnt,
                                                  f"(cd {mnt} && {cmd})"), repeat=repeat)
                res.rows.append(Row(f"ours: lklfuse ({what})", s, m, note))
            if fs == "ext4" and shutil.which("fuse2fs", path=ENV["PATH"]):
                # like ours: in the foreground, its exit waited for
                s, _m, note = timed(_through_mount(f"fuse2fs {q} {mnt} -o ro,fakeroot -f", mnt,
                                                   f"(cd {mnt} && {cmd})"), repeat=repeat)
                res.rows.append(Row(f"fuse2fs ({what})", s, note=note))
            elif fs == "ext4":
                res.rows.append(Row(f"fuse2fs ({what})", note="fuse2fs not installed"))
        return res


class LklfuseWrite(Workload):
    name = "lklfuse: cp -a of the tree into an empty ext4 image"
    per_fs = False

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        c = _CopyIn.start(data, self.name, repeat)
        res, mnt, fresh = c.res, c.mnt, c.fresh
        q = shlex.quote(str(c.img))
        copy = f"cp -a {shlex.quote(str(c.src))}/. {mnt}/"
        missing = _available("lklfuse")
        if missing:
            res.rows.append(Row("ours: lklfuse", note=missing))
        else:
            s, m, note = timed(_through_mount(f"{FSTOOL['lklfuse']} {q} {mnt} -f", mnt, copy),
                               setup=fresh, repeat=repeat)
            res.rows.append(Row("ours: lklfuse", s, m, note))
        if shutil.which("fuse2fs", path=ENV["PATH"]):
            # fuse2fs writes ext4 without its journal ("Writing to the journal is not
            # supported"): no crash safety, less to write. Into the 45,000-file tree each
            # run takes minutes: no warm-up run (the source is in the page cache already)
            s, _m, note = timed(_through_mount(f"fuse2fs {q} {mnt} -o fakeroot -f", mnt, copy),
                                setup=fresh, repeat=repeat, warm_up=False)
            res.rows.append(Row("fuse2fs (writes without the journal)", s, note=note))
        else:
            res.rows.append(Row("fuse2fs (writes without the journal)",
                                note="fuse2fs not installed"))
        return res


class Startup(Workload):
    name = "start-up: fs2tar of a one-file image"

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        res = Result(self.name, fs)
        img = data.images.get((fs, "one"))  # type: ignore[arg-type]
        if img is None:
            res.rows.append(Row("ours: fs2tar", note="no image"))
            return res
        s, m, note = timed(f"{FSTOOL['fs2tar']} --no-progress {shlex.quote(str(img))} - "
                           f"| cat >/dev/null", repeat=repeat)
        res.rows.append(Row("ours: fs2tar", s, m, note))
        return res


class Dissect:
    """dissect.extfs/xfs/btrfs walking the same image, from their own virtual environment."""

    why = ""
    SCRIPT = Path(__file__).with_name("dissect_walk.py")

    @classmethod
    def command(cls, data: Datasets, fs: str | None, img: Path) -> str | None:
        venv = data.work / "dissect-venv"
        py = venv / "bin" / "python"
        if not py.exists():
            r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                               text=True)
            if r.returncode == 0:
                r = subprocess.run([str(py), "-m", "pip", "install", "-q", "dissect.extfs",
                                    "dissect.xfs", "dissect.btrfs"], capture_output=True, text=True)
            if r.returncode != 0:
                cls.why = "could not install dissect"
                shutil.rmtree(venv, ignore_errors=True)
                return None
        return f"{py} {cls.SCRIPT} {fs} {shlex.quote(str(img))}"


WORKLOADS: list[Workload] = [Fs2tar(), Cpfromfs(), Cptofs(), CptofsBig(), Lklfuse(),
                             LklfuseWrite(), Startup()]
