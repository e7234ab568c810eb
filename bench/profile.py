"""Where the time goes: run one of our tools under cProfile on a bench dataset.

    python -m bench.profile [--quick] [--fs ext4|btrfs|xfs] fs2tar|cpfromfs|cptofs [--top N]

Uses the images ``python -m bench`` builds (building them if needed), writes the raw profile
to bench/results/profile-TOOL-FS.prof (for snakeviz or pstats) and prints the functions with
the most time of their own and the kernel's call paths with the most cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .datasets import Datasets

HERE = Path(__file__).resolve().parent


def _run_tool(tool: str, argv: list[str]) -> None:
    """Run a tool in this process (its entry point would leave the process at the end)."""
    import click

    from fstools.common.cli import run_command

    command: click.Command
    if tool == "fs2tar":
        from fstools.fs2tar.__main__ import cli as command
    elif tool == "cpfromfs":
        from fstools.cptofs.__main__ import cpfromfs_cli as command
    else:
        from fstools.cptofs.__main__ import cptofs_cli as command
    sys.argv = [tool, *argv]
    code = run_command(command, tool)
    if code not in (0, None):
        raise SystemExit(f"{tool} failed (exit status {code})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("tool", choices=["fs2tar", "cpfromfs", "cptofs"])
    ap.add_argument("--quick", action="store_true", help="the 5,000-file dataset")
    ap.add_argument("--fs", default="ext4", choices=["ext4", "btrfs", "xfs"])
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    args = ap.parse_args(argv)

    data = Datasets(args.work, quick=args.quick)
    fs = "ext4" if args.tool == "cptofs" else args.fs
    data.prepare([fs])
    scratch = Path(tempfile.mkdtemp(prefix="lkl-profile-", dir="/var/tmp"))
    try:
        if args.tool == "fs2tar":
            # one process: the workers of -j N would run outside the profiler
            tool_args = ["-j", "1", str(data.images[(fs, "tree")]), str(scratch / "out.tar")]
        elif args.tool == "cpfromfs":
            tool_args = ["-i", str(data.images[(fs, "tree")]), "/", str(scratch / "out")]
        else:
            img = scratch / "copy-in.img"
            with open(img, "wb") as f:
                f.truncate(data._size_for(data.trees["tree"]))
            subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
            os.chdir(data.trees["tree"])
            tool_args = ["-i", str(img), ".", "/"]
        prof = cProfile.Profile()
        prof.enable()
        _run_tool(args.tool, tool_args)
        prof.disable()
    finally:
        os.chdir(HERE.parent)
        shutil.rmtree(scratch, ignore_errors=True)
    out = HERE / "results" / f"profile-{args.tool}-{fs}.prof"
    out.parent.mkdir(exist_ok=True)
    prof.dump_stats(str(out))
    stats = pstats.Stats(prof)
    print(f"== {args.tool} on {fs}: own time")
    stats.sort_stats("tottime").print_stats(args.top)
    print(f"== {args.tool} on {fs}: cumulative time inside the kernel")
    stats.sort_stats("cumtime").print_stats(r"kernel/", args.top)
    print(f"raw profile: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
