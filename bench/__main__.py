"""Benchmarks against the host kernel and peer tools, in one run.

    python -m bench [--quick] [--repeat N] [--only WORKLOAD ...]

Builds the datasets and images once (in bench/work/), then measures every
workload (median of --repeat runs, after one warm-up run so that every
contender reads the image from the host's page cache; fuse2fs's writes, minutes
a run, skip it, as the runs before have cached their source) and prints a table of
absolute times, ratios against the host kernel, and our peak memory. Results
go to bench/results/ as JSON, a markdown table and, when matplotlib is
installed, a PNG of the ratios. Workloads whose tool or peer is unavailable
(no root for loop mounts, no fuse2fs, a tool not built yet) are reported as
such, never faked.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import sys
import time
from pathlib import Path

from .datasets import Datasets
from .report import write_reports
from .workloads import WORKLOADS, Result

HERE = Path(__file__).resolve().parent


def precompile() -> None:
    """Byte-compile the project first, so no run pays for compiling it (an environment with
    PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start)."""
    root = HERE.parent
    for pkg in ("kernel", "fstools"):
        compileall.compile_dir(str(root / pkg), quiet=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small datasets (5,000 files, 64 MiB file) for a fast check")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="workloads to run, by the start of their names (fs2tar, cptofs, ...)")
    ap.add_argument("--fs", nargs="*", default=["ext4", "btrfs", "xfs"], help="filesystems")
    ap.add_argument("--work", type=Path, default=HERE / "work", help="where datasets live")
    args = ap.parse_args(argv)

    precompile()
    data = Datasets(args.work, quick=args.quick)
    data.prepare(args.fs)
    results: list[Result] = []
    for wl in WORKLOADS:
        if args.only and not any(wl.name.startswith(o) for o in args.only):
            continue
        for fs in (args.fs if wl.per_fs else [None]):
            print(f"== {wl.name}{f' ({fs})' if fs else ''}", flush=True)
            res = wl.run(data, fs, args.repeat)
            results.append(res)
            for line in res.lines():
                print("   " + line, flush=True)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
            "python": sys.version.split()[0], "cpus": os.cpu_count(), "quick": args.quick,
            "repeat": args.repeat, "datasets": data.describe(), "kernel": _kernel_modules()}
    paths = write_reports(HERE / "results", meta, results)
    print("\n" + Path(paths["markdown"]).read_text())
    print("results in " + ", ".join(str(p) for p in paths.values()))
    return 0


def _kernel_modules() -> str:
    """What our tools ran: the kernel's compiled modules or the Python ones (and why)."""
    import kernel.native  # (importing it loads the compiled modules, when they run)

    return kernel.native.status()


if __name__ == "__main__":
    sys.exit(main())
