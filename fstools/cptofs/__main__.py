"""cptofs and cpfromfs: copy files into and out of a filesystem image (LKL's command lines).

Both commands are one engine (``copy.py``) between two endpoints
(``endpoint.py``): the host and the image. ``cptofs`` mounts the image
read-write and copies host paths into it; ``cpfromfs`` mounts it read-only and
copies image paths out. As LKL's tool does, ``cptofs`` started under the name
``cpfromfs`` (a symlink) behaves as ``cpfromfs``.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from typing import Any

import click

from ..common.cli import (
    EXIT_CODES_HELP,
    EXIT_PARTIAL,
    EXIT_USAGE,
    ToolError,
    debug_option,
    fstype_option,
    main_entry,
    partition_option,
    run_tool,
    setup_logging,
)
from ..common.image import open_image
from ..common.progress import Progress
from .copy import Copier, IdMap, Options, PathError, Source, Stats, resolve_sources
from .endpoint import HostEndpoint, ImageEndpoint, ReadAheadHost

ST_RDONLY = 1  # statfs f_flags

KEPT = """Kept: modes exactly (setuid, setgid, sticky; no umask), owners (the source's
unless -o/-g or --uid-map/--gid-map say otherwise), access and modification
times in nanoseconds, extended attributes of every namespace and ACLs,
symlinks as symlinks, hard links as links, holes in sparse files, device
nodes and fifos. Sockets are left out with a warning; so are device nodes
when the destination may not create them (without root, on the host).
Existing directories are merged; other existing files are replaced (removed
first: a symlink already there is never followed)."""

CPTOFS_HELP = f"""Copy host files SRC... into the filesystem image IMAGE, to DST.

DST is a directory in the image, which must exist (as in LKL), or a new name
when there is one source (as cp does). A source whose last component is '.'
(or the host root '/') has its contents copied into DST, which also takes its
attributes (as 'cp -a DIR/. DST' does). A quoted glob in a source's last
component is matched too, when no file has that very name. Type and partition
are detected when not given. The image is unmounted cleanly at the end, with
an empty journal, so e2fsck and the host kernel accept it directly.

{KEPT}

{EXIT_CODES_HELP}
"""

CPFROMFS_HELP = f"""Copy files SRC... out of the filesystem image IMAGE into the host directory DST.

SRC is a path in the image; its last component may be a shell-style glob
('*.conf', 'log?', '[ab]*'), matched inside the image (dot files included,
as LKL matches), when no file has that very name. '/' copies the whole image
into DST, which takes the root directory's attributes. DST must exist (as in
LKL), or be a new name when there is one source (as cp does). The image is
opened read-only and never changes.

Nothing is ever written outside DST, whatever the image holds: every name is
created relative to a directory already opened with O_NOFOLLOW, no symlink
from the image is followed on the host, and names holding '/' are refused.

{KEPT}

{EXIT_CODES_HELP}
"""


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("-i", "--filesystem-image", "image", required=True,
                     type=click.Path(dir_okay=False), help="The filesystem image (mandatory)."),
        fstype_option(),
        partition_option(),
        click.option("-o", "--owner", type=click.IntRange(0, 0xFFFFFFFE), default=None,
                     help="Owner (uid) of every copied file, instead of the source's."),
        click.option("-g", "--group", type=click.IntRange(0, 0xFFFFFFFE), default=None,
                     help="Group (gid) of every copied file, instead of the source's."),
        click.option("--uid-map", multiple=True, metavar="FROM:TO[:COUNT]",
                     help="Map source uids FROM..FROM+COUNT-1 to TO..; repeatable."),
        click.option("--gid-map", multiple=True, metavar="FROM:TO[:COUNT]",
                     help="Map source gids likewise; repeatable."),
        click.option("-p", "--enable-printk", "printk", is_flag=True,
                     help="Show the kernel log (LKL's -p)."),
        click.option("-m", "--mb", type=click.IntRange(min=4), default=64, show_default=True,
                     help="Memory for the kernel's caches, in MiB (LKL's mb=)."),
        click.option("--progress/--no-progress", default=None,
                     help="Show progress on a terminal (default: when stderr is a terminal)."),
        click.option("--keep-going", is_flag=True,
                     help="Report files that cannot be copied and go on (exit status 3); "
                          "a full or failing destination still stops the copy."),
        click.option("-v", "--verbose", is_flag=True, help="List each copied file."),
        debug_option(),
        click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="SRC... DST"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _options(owner: int | None, group: int | None, uid_map: tuple[str, ...],
             gid_map: tuple[str, ...], keep_going: bool, verbose: bool,
             selinux: str | None = None) -> Options:
    try:
        umap, gmap = IdMap.parse(uid_map), IdMap.parse(gid_map)
    except ValueError as e:
        raise ToolError(f"--uid-map/--gid-map: {e}", EXIT_USAGE) from None
    return Options(owner=owner, group=group, uid_map=umap, gid_map=gmap,
                   selinux=os.fsencode(selinux) + b"\0" if selinux else None,
                   keep_going=keep_going, verbose=verbose)


def _split(paths: tuple[str, ...]) -> tuple[list[bytes], bytes]:
    if len(paths) < 2:
        raise ToolError("missing destination: give at least one SRC and the DST", EXIT_USAGE)
    return [os.fsencode(p) for p in paths[:-1]], os.fsencode(paths[-1])


class _Reporter:
    """Warnings as one line each, clearing the progress line first."""

    def __init__(self, prog: str, progress: bool | None) -> None:
        self.prog = prog
        self.bar = Progress(enabled=progress)

    def warn(self, msg: str) -> None:
        if self.bar.enabled:
            sys.stderr.write("\r\033[K")
        sys.stderr.write(f"{self.prog}: {msg}\n")
        sys.stderr.flush()


def _finish(prog: str, stats: Stats, rep: _Reporter) -> int:
    rep.bar.done()
    if stats.skipped:
        rep.warn(f"{len(stats.skipped)} file(s) could not be copied and were skipped")
        return EXIT_PARTIAL
    return 0


# ---------------------------------------------------------------------------------- cptofs
@click.command(help=CPTOFS_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@_common
@click.option("-s", "--selinux", default=None, metavar="CONTEXT",
              help="Set this SELinux label (security.selinux) on every copied file.")
def cptofs_cli(image: str, fstype: str | None, part: int | None, owner: int | None,
               group: int | None, uid_map: tuple[str, ...], gid_map: tuple[str, ...],
               printk: bool, mb: int, progress: bool | None, keep_going: bool, verbose: bool,
               debug: bool, paths: tuple[str, ...], selinux: str | None) -> None:
    setup_logging(printk, debug)
    run_tool("cptofs", lambda: cptofs(
        image, paths, fstype=fstype, part=part, mb=mb, progress=progress,
        options=_options(owner, group, uid_map, gid_map, keep_going, verbose, selinux)), debug)


def cptofs(image: str, paths: tuple[str, ...], *, fstype: str | None = None,
           part: int | None = None, mb: int = 64, progress: bool | None = None,
           options: Options | None = None) -> int:
    """Copy host paths into the image; returns the exit status."""
    sources, dest = _split(paths)
    options = options or Options()
    host = ReadAheadHost()
    plan = resolve_sources(host, sources)  # every source checked before the image is touched
    try:
        ist = os.stat(image)
        options.skip = frozenset({(ist.st_dev, ist.st_ino)})
    except OSError:
        pass  # open_image reports it
    rep = _Reporter("cptofs", progress)
    with open_image(image, readonly=False, prog="cptofs", fstype=fstype, part=part, mb=mb) as m:
        if m.sys.statfs(m.root).f_flags & ST_RDONLY:
            # a driver may fall back to a read-only mount: say so before copying anything
            raise ToolError(f"{image}: Read-only file system ({m.fstype} was mounted read-only)")
        img = ImageEndpoint(m.sys, m.root)
        stats = _run(Copier(host, img, options, warn=rep.warn, progress=rep.bar.update,
                            dst_prefix=f"{image}:", out=sys.stdout), img, plan, dest)
    return _finish("cptofs", stats, rep)


# ---------------------------------------------------------------------------------- cpfromfs
@click.command(help=CPFROMFS_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@_common
def cpfromfs_cli(image: str, fstype: str | None, part: int | None, owner: int | None,
                 group: int | None, uid_map: tuple[str, ...], gid_map: tuple[str, ...],
                 printk: bool, mb: int, progress: bool | None, keep_going: bool, verbose: bool,
                 debug: bool, paths: tuple[str, ...]) -> None:
    setup_logging(printk, debug)
    run_tool("cpfromfs", lambda: cpfromfs(
        image, paths, fstype=fstype, part=part, mb=mb, progress=progress,
        options=_options(owner, group, uid_map, gid_map, keep_going, verbose)), debug)


def cpfromfs(image: str, paths: tuple[str, ...], *, fstype: str | None = None,
             part: int | None = None, mb: int = 64, progress: bool | None = None,
             options: Options | None = None) -> int:
    """Copy image paths out to the host; returns the exit status."""
    sources, dest = _split(paths)
    options = options or Options()
    rep = _Reporter("cpfromfs", progress)
    with open_image(image, readonly=True, prog="cpfromfs", fstype=fstype, part=part,
                    mb=mb) as m:
        img = ImageEndpoint(m.sys, m.root)
        plan = _resolve_in_image(img, sources, image)
        if any(not s.name for s in plan) and rep.bar.enabled:
            st = m.sys.statfs("/")
            rep.bar.total_bytes = (st.f_blocks - st.f_bfree) * st.f_bsize
            rep.bar.total_files = max(0, st.f_files - st.f_ffree)
        stats = _run(Copier(img, HostEndpoint(), options, warn=rep.warn,
                            progress=rep.bar.update, src_prefix=f"{image}:", out=sys.stdout),
                     img, plan, dest)
    return _finish("cpfromfs", stats, rep)


def _resolve_in_image(img: ImageEndpoint, sources: list[bytes], image: str) -> list[Source]:
    try:
        return resolve_sources(img, sources, f"{image}:")
    except BaseException:
        img.finish()
        raise


def _more_descriptors() -> None:
    """One descriptor per directory level is held open: allow deep trees."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


def _run(copier: Copier, img: ImageEndpoint, plan: list[Source], dest: bytes) -> Stats:
    _more_descriptors()
    old = os.umask(0)  # the modes are set exactly anyway; no umask between
    ok = False
    try:
        stats = copier.run(plan, dest)
        ok = True
    finally:
        os.umask(old)
        try:
            img.finish()
        except OSError:
            if ok:
                raise
    return stats


def cptofs_main() -> None:
    # LKL's cptofs acts as cpfromfs when started through a link of that name
    if os.path.basename(sys.argv[0]).startswith("cpfromfs"):
        cpfromfs_main()
    main_entry(cptofs_cli, "cptofs")


def cpfromfs_main() -> None:
    main_entry(cpfromfs_cli, "cpfromfs")


__all__ = ["cptofs", "cpfromfs", "cptofs_main", "cpfromfs_main", "PathError"]

if __name__ == "__main__":
    cptofs_main()
