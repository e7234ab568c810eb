"""fs2tar: export a whole filesystem image to a tar archive, losing nothing."""

from __future__ import annotations

import contextlib
import gc
import os
import stat
import sys
from typing import Any, BinaryIO

import click

from ..common.cli import (
    EXIT_CODES_HELP,
    EXIT_PARTIAL,
    EXIT_USAGE,
    ToolError,
    debug_option,
    fstype_option,
    main_entry,
    mb_option,
    partition_option,
    run_tool,
    setup_logging,
)
from ..common.image import open_image
from ..common.progress import Progress
from .archive import FILTERS, ArchiveWriteError, TarWriter, compression_for, finishing
from .export import Exporter, Stats
from .parallel import default_jobs, export_parallel

HELP = f"""Export the filesystem in IMAGE to the tar archive OUT ('-' for standard output).

Everything goes in: every file type (sockets excepted), modes, numeric owners,
nanosecond times, every extended attribute, POSIX ACLs, SELinux labels, hard
links as links, sparse files as sparse entries. The image is opened read-only
and never changes, even when its journal needs recovery.

The compression follows OUT's name (.tar.gz/.tgz, .tar.xz, .tar.zst, .tar.bz2)
unless --compress says otherwise.

{EXIT_CODES_HELP}
"""


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@fstype_option()
@partition_option()
@click.option("-s", "--selinux", "selinux_file", type=click.Path(dir_okay=False, writable=True),
              help="Also write 'path context' lines of every SELinux label to this file (LKL's -s).")
@click.option("--subvol", help="btrfs: export this subvolume instead of the default one.")
@click.option("--format", "fmt", type=click.Choice(["pax", "gnu", "ustar"]), default="pax",
              show_default=True, help="Archive format (only pax keeps xattrs, ACLs and ns times).")
@click.option("--compress", type=click.Choice(["none", *FILTERS]), default=None,
              help="Compression, overriding the one OUT's name implies.")
@click.option("--progress/--no-progress", default=None,
              help="Show progress on a terminal (default: when stderr is a terminal).")
@click.option("--keep-going", is_flag=True,
              help="Report files that cannot be read and go on (exit status 3).")
@click.option("--birthtime", is_flag=True,
              help="Also record creation times (LIBARCHIVE.creationtime; GNU tar warns about it).")
@click.option("-v", "--verbose", is_flag=True, help="List each file as it is archived.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes reading the image (default: one per CPU, at most 4, "
                   "or one for a small filesystem); the archive is the same whatever the number.")
@mb_option()
@debug_option()
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
def cli(fstype: str | None, part: int | None, selinux_file: str | None, subvol: str | None,
        fmt: str, compress: str | None, progress: bool | None, keep_going: bool, birthtime: bool,
        verbose: bool, jobs: int | None, mb: int, debug: bool, image: str, out: str) -> None:
    setup_logging(False, debug)
    run_tool("fs2tar", lambda: export(image, out, fstype=fstype, part=part,
                                      selinux_file=selinux_file, subvol=subvol, fmt=fmt,
                                      compress=compress, progress=progress,
                                      keep_going=keep_going, verbose=verbose, mb=mb,
                                      birthtime=birthtime, jobs=jobs), debug)


SMALL_TREE = 2000  # inodes in use: below this, one process by default
SMALL_TREE_BYTES = 8 << 20  # or, without inode counts, bytes in use


def export(image: str, out: str, *, fstype: str | None = None, part: int | None = None,
           selinux_file: str | None = None, subvol: str | None = None, fmt: str = "pax",
           compress: str | None = None, progress: bool | None = None, keep_going: bool = False,
           verbose: bool = False, mb: int = 64, birthtime: bool = False,
           jobs: int | None = None) -> int:
    if out != "-" and os.path.exists(out) and os.path.exists(image) \
            and os.path.samefile(out, image):
        raise ToolError(f"{out}: the archive would overwrite the image", EXIT_USAGE)
    compression = compress if compress is not None else (compression_for(out) if out != "-" else None)
    if compression == "none":
        compression = None
    if out == "-" and sys.stdout.isatty():
        raise ToolError("refusing to write an archive to a terminal; redirect it or name a file",
                        EXIT_USAGE)
    options = f"subvol={subvol}" if subvol else ""

    def warn(msg: str) -> None:
        sys.stderr.write(f"\r\033[Kfs2tar: {msg}\n" if show.enabled else f"fs2tar: {msg}\n")

    with open_image(image, readonly=True, prog="fs2tar", fstype=fstype, part=part, mb=mb,
                    options=options) as m:
        st = m.sys.statfs(m.root)
        used = (st.f_blocks - st.f_bfree) * st.f_bsize
        show = Progress(used, max(0, st.f_files - st.f_ffree), enabled=progress)
        selinux_out: BinaryIO | None = None
        target: str | int = sys.stdout.fileno() if out == "-" else out
        ok = False
        try:
            if selinux_file:
                try:
                    selinux_out = open(selinux_file, "wb")  # noqa: SIM115 - closed below
                except OSError as e:
                    raise ToolError(f"{selinux_file}: {e.strerror}") from None
            if jobs is None:
                # a small tree is exported sooner than workers start (btrfs counts no
                # inodes: there the space in use tells)
                small = (st.f_files - st.f_ffree < SMALL_TREE if st.f_files
                         else used < SMALL_TREE_BYTES)
                jobs = 1 if small else default_jobs()
            gc.freeze()  # what exists now (modules, the mounted kernel) is never collected
            if jobs > 1:
                stats = export_parallel(m.sys, m.root, target, out, fmt=fmt, compression=compression,
                                        jobs=jobs, keep_going=keep_going, verbose=verbose,
                                        selinux_out=selinux_out, birthtime=birthtime, warn=warn,
                                        progress=show.update)
            else:
                stats = _export_serial(m.sys, m.root, target, out, fmt, compression, keep_going,
                                       verbose, selinux_out, birthtime, warn, show.update)
            ok = True
        finally:
            show.done()
            if selinux_out is not None:
                selinux_out.close()
            if not ok and out != "-":
                _remove_partial(out)
    if stats.dropped_xattrs:
        warn(f"--format {fmt} cannot store extended attributes or ACLs: "
             f"{stats.dropped_xattrs} were left out (use --format pax)")
    if stats.skipped:
        warn(f"{len(stats.skipped)} file(s) could not be archived and were left out or cut short")
        return EXIT_PARTIAL
    return 0


def _export_serial(sys_: Any, root: str, target: str | int, label: str, fmt: str,
                   compression: str | None,
                   keep_going: bool, verbose: bool, selinux_out: BinaryIO | None,
                   birthtime: bool, warn: Any, progress: Any) -> Stats:
    """One exporter in this process, writing straight to the archive."""
    try:
        writer = TarWriter(target, fmt, compression)
    except ArchiveWriteError as e:
        raise ToolError(f"{label}: {e}") from None
    with finishing(writer, label):
        exporter = Exporter(sys_, root, writer, keep_going=keep_going, verbose=verbose,
                            selinux_out=selinux_out, progress=progress, warn=warn,
                            birthtime=birthtime)
        stats = exporter.run()
    return stats


def _remove_partial(out: str) -> None:
    """Never leave a truncated archive behind; but a device or FIFO named as the output
    (/dev/null, a tape) is not ours to remove."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(out).st_mode):
            os.unlink(out)


def main() -> None:
    main_entry(cli, "fs2tar")


if __name__ == "__main__":
    main()
