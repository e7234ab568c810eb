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


@dataclass
class Contender:
    """One command of a comparison: ``setup`` before each run, ``teardown`` after it."""

    cmd: str
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    cwd: str | None = None
    warm_up: bool = True  # False: a contender slow enough that the page cache cannot matter


def timed_together(contenders: list[Contender], repeat: int = 3,
                   ) -> list[tuple[float | None, float | None, str]]:
    """Median wall time and peak RSS (MB) of each contender's command (bash), or a note why
    it failed; after one warm-up run of each (unless its ``warm_up`` is False).

    The runs go round by round, each contender once per round: a slow spell of the
    machine (a VM's CPUs change speed from minute to minute) falls on every contender
    alike instead of on whichever was being timed, and the ratios stay fair."""
    times: list[list[float]] = [[] for _ in contenders]
    rss: list[list[float]] = [[] for _ in contenders]
    failed: dict[int, str] = {}
    for rnd in range(repeat + 1):
        for k, c in enumerate(contenders):
            if k in failed or (rnd == 0 and not c.warm_up):
                continue
            if c.setup:
                c.setup()
            t = time.perf_counter()
            proc = subprocess.Popen(["bash", "-o", "pipefail", "-c", c.cmd], env=ENV, cwd=c.cwd,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _pid, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - t
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            proc.returncode = os.waitstatus_to_exitcode(status)
            if c.teardown:
                c.teardown()
            if proc.returncode != 0:
                first = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
                failed[k] = first[:120]
                continue
            if rnd == 0:
                continue  # warm-up: the image is now in the host's page cache for everyone
            times[k].append(elapsed)
            rss[k].append(usage.ru_maxrss / 1024)
    return [(None, None, failed[k]) if k in failed else
            (statistics.median(times[k]), max(rss[k]), "") for k in range(len(contenders))]


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


class _Rows:
    """The rows of a result whose contenders are timed together (``timed_together``): a row
    is added with its contender, or with a note saying why it has none."""

    def __init__(self, res: Result) -> None:
        self.res = res
        self._pending: list[tuple[Row, Contender, bool]] = []

    def add(self, who: str, contender: Contender | None = None, *, note: str = "",
            reference: bool = False, memory: bool = True) -> None:
        """``memory``: report the peak RSS (our tools' rows)."""
        row = Row(who, note=note, reference=reference)
        self.res.rows.append(row)
        if contender is not None:
            self._pending.append((row, contender, memory))

    def run(self, repeat: int) -> Result:
        results = timed_together([c for _, c, _ in self._pending], repeat)
        for (row, _c, memory), (secs, mb, note) in zip(self._pending, results):
            row.seconds, row.note = secs, note
            row.rss_mb = mb if memory else None
        self._pending = []
        return self.res


class Fs2tar(Workload):
    name = "fs2tar: tree to a tar stream"

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        rows = _Rows(Result(self.name, fs))
        sets = _datasets(data, fs)
        if not sets:
            rows.add("ours (fs2tar)", note="no image")
            return rows.res
        for label, img in sets:
            q = shlex.quote(str(img))
            mnt = _mnt(data, "k")
            if is_root():
                rows.add(f"host kernel: loop mount + tar{label}", Contender(
                    f"mount -o loop,ro {q} {mnt} && (cd {mnt} && tar -cf - . | cat >/dev/null); "
                    f"umount {mnt}"), reference=True, memory=False)
            else:
                rows.add(f"host kernel: loop mount + tar{label}", note="needs root",
                         reference=True)
            rows.add(f"ours: fs2tar{label}",
                     Contender(f"{FSTOOL['fs2tar']} --no-progress {q} - | cat >/dev/null"))
            dissect = Dissect.command(data, fs, img)
            if dissect is None:
                rows.add(f"dissect.{_dissect_name(fs)}{label}", note=Dissect.why)
            else:
                rows.add(f"dissect.{_dissect_name(fs)}{label}", Contender(dissect), memory=False)
            rows.run(repeat)
        return rows.res


def _dissect_name(fs: str | None) -> str:
    return "extfs" if fs == "ext4" else str(fs)


class Cpfromfs(Workload):
    name = "cpfromfs: tree out of the image"

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        rows = _Rows(Result(self.name, fs))
        out = data.work / "out"

        def clean() -> None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()

        sets = _datasets(data, fs)
        if not sets:
            rows.add("ours (cpfromfs)", note="no image")
            return rows.res
        missing = _available("cpfromfs")
        for label, img in sets:
            q = shlex.quote(str(img))
            mnt = _mnt(data, "k")
            if is_root():
                rows.add(f"host kernel: loop mount + cp -a{label}", Contender(
                    f"mount -o loop,ro {q} {mnt} && cp -a {mnt}/. {out}/; umount {mnt}",
                    setup=clean), reference=True, memory=False)
            if missing:
                rows.add(f"ours: cpfromfs{label}", note=missing)
            else:
                rows.add(f"ours: cpfromfs{label}",
                         Contender(f"{FSTOOL['cpfromfs']} -i {q} / {out}", setup=clean))
            rows.run(repeat)
        return rows.res


def _through_mount(server: str, mnt: Path, cmd: str) -> str:
    """Serve a FUSE mount at ``mnt`` in the foreground, run ``cmd`` once it is up, then
    unmount and wait for the server to exit (its writes are done when it is)."""
    return (f"{server} & pid=$!; for i in $(seq 100); do mountpoint -q {mnt} && break; "
            f"sleep 0.05; done && {cmd}; fusermount3 -u {mnt}; wait $pid")


@dataclass
class _CopyIn:
    """A workload copying the tree into an empty ext4, made again for every run
    (``fresh``); its rows are headed by the host kernel's loop mount + ``cp -a`` +
    umount, all timed together."""

    rows: _Rows
    src: Path
    img: Path
    size: int
    mnt: Path

    @classmethod
    def start(cls, data: Datasets, name: str, size: int | None = None,
              tag: str = "copy-in") -> _CopyIn:
        """``size``: the image's (sparse) size, by default what the tree needs."""
        src = data.trees["tree"]
        c = cls(_Rows(Result(name, "ext4")), src, data.work / f"{tag}.ext4.img",
                size or data._size_for(src), _mnt(data, "w"))
        if is_root():
            q, qs = shlex.quote(str(c.img)), shlex.quote(str(src))
            # noinit_itable: no background zeroing of inode tables (it would fill a sparse
            # image with gigabytes of zeros while it is timed)
            c.rows.add("host kernel: loop mount + cp -a + umount", Contender(
                f"mount -o loop,noinit_itable {q} {c.mnt} && cp -a {qs}/. {c.mnt}/ && "
                f"umount {c.mnt}", setup=c.fresh), reference=True, memory=False)
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
        c = _CopyIn.start(data, self.name)
        rows, img, size = c.rows, c.img, c.size
        q, qs = shlex.quote(str(img)), shlex.quote(str(c.src))
        rows.add("mkfs.ext4 -d (includes mkfs)", Contender(
            f"truncate -s {size} {q} && mkfs.ext4 -q -F -d {qs} {q}",
            setup=lambda: img.unlink(missing_ok=True)), memory=False)
        missing = _available("cptofs")
        if missing:
            rows.add("ours: cptofs", note=missing)
            return rows.run(repeat)
        rows.add("ours: cptofs", Contender(f"cd {qs} && {FSTOOL['cptofs']} -i {q} . /",
                                           setup=c.fresh))

        def fresh_nojournal() -> None:
            c.fresh("-O", "^has_journal")

        # what the journal costs: the same copy into an ext4 made without one
        rows.add("ours: cptofs, ext4 without a journal",
                 Contender(f"cd {qs} && {FSTOOL['cptofs']} -i {q} . /", setup=fresh_nojournal))
        return rows.run(repeat)


class CptofsBig(Workload):
    """What users copy into most: a VM disk, large and sparse (8,192 block groups), where
    the time must not grow with the size of the image."""

    name = "cptofs: tree into an empty sparse 1 TiB ext4 image"
    per_fs = False

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        c = _CopyIn.start(data, self.name, size=1 << 40, tag="copy-in-1t")
        try:
            missing = _available("cptofs")
            if missing:
                c.rows.add("ours: cptofs", note=missing)
            else:
                q, qs = shlex.quote(str(c.img)), shlex.quote(str(c.src))
                c.rows.add("ours: cptofs", Contender(f"cd {qs} && {FSTOOL['cptofs']} -i {q} . /",
                                                     setup=c.fresh))
            return c.rows.run(repeat)
        finally:
            c.img.unlink(missing_ok=True)  # a gigabyte of journal and tables on the disk


class Lklfuse(Workload):
    name = "lklfuse: cat of the big file, tar of the tree"

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        rows = _Rows(Result(self.name, fs))
        for what, dataset, cmd in (("cat big file", "big", "cat random.bin >/dev/null"),
                                   ("tar tree", "tree", "tar -cf - . | cat >/dev/null")):
            img = data.images.get((fs, dataset))  # type: ignore[arg-type]
            if img is None:
                continue
            q = shlex.quote(str(img))
            mnt = _mnt(data, "f")
            if is_root():
                rows.add(f"host kernel ({what})", Contender(
                    f"mount -o loop,ro {q} {mnt} && (cd {mnt} && {cmd}); umount {mnt}"),
                    reference=True, memory=False)
            missing = _available("lklfuse")
            if missing:
                rows.add(f"ours: lklfuse ({what})", note=missing)
            else:
                # in the foreground, waited for: its peak memory is in the rusage
                rows.add(f"ours: lklfuse ({what})", Contender(_through_mount(
                    f"{FSTOOL['lklfuse']} {q} {mnt} -o ro -f", mnt, f"(cd {mnt} && {cmd})")))
            if fs == "ext4" and shutil.which("fuse2fs", path=ENV["PATH"]):
                # like ours: in the foreground, its exit waited for
                rows.add(f"fuse2fs ({what})", Contender(_through_mount(
                    f"fuse2fs {q} {mnt} -o ro,fakeroot -f", mnt, f"(cd {mnt} && {cmd})")),
                    memory=False)
            elif fs == "ext4":
                rows.add(f"fuse2fs ({what})", note="fuse2fs not installed")
            rows.run(repeat)
        return rows.res


class LklfuseWrite(Workload):
    name = "lklfuse: cp -a of the tree into an empty ext4 image"
    per_fs = False

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        c = _CopyIn.start(data, self.name)
        rows, mnt, fresh = c.rows, c.mnt, c.fresh
        q = shlex.quote(str(c.img))
        copy = f"cp -a {shlex.quote(str(c.src))}/. {mnt}/"
        missing = _available("lklfuse")
        if missing:
            rows.add("ours: lklfuse", note=missing)
        else:
            rows.add("ours: lklfuse", Contender(
                _through_mount(f"{FSTOOL['lklfuse']} {q} {mnt} -f", mnt, copy), setup=fresh))
        if shutil.which("fuse2fs", path=ENV["PATH"]):
            # fuse2fs writes ext4 without its journal ("Writing to the journal is not
            # supported"): no crash safety, less to write. Into the 45,000-file tree each
            # run takes minutes: no warm-up run (the source is in the page cache already)
            rows.add("fuse2fs (writes without the journal)", Contender(
                _through_mount(f"fuse2fs {q} {mnt} -o fakeroot -f", mnt, copy), setup=fresh,
                warm_up=False), memory=False)
        else:
            rows.add("fuse2fs (writes without the journal)", note="fuse2fs not installed")
        return rows.run(repeat)


class Startup(Workload):
    name = "start-up: fs2tar of a one-file image"

    def run(self, data: Datasets, fs: str | None, repeat: int) -> Result:
        rows = _Rows(Result(self.name, fs))
        img = data.images.get((fs, "one"))  # type: ignore[arg-type]
        if img is None:
            rows.add("ours: fs2tar", note="no image")
        else:
            rows.add("ours: fs2tar", Contender(
                f"{FSTOOL['fs2tar']} --no-progress {shlex.quote(str(img))} - | cat >/dev/null"))
        return rows.run(repeat)


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
