"""The copy engine: one walk from any ``Endpoint`` to any other.

``Copier.run(sources, dest)`` resolves the command line the way ``cp`` and
LKL's cptofs do, then walks each source with an explicit stack (no recursion
limit, one open directory per level on each side) and recreates every entry:

* directories are merged into existing ones; other existing names are
  replaced (unlinked, then created with O_EXCL - never opened or followed);
* regular files are copied region by region (SEEK_DATA/SEEK_HOLE on the
  source), holes are left unwritten and the size is set with ftruncate;
* symlinks, device nodes and fifos are recreated; sockets are left out with
  a warning, as are device nodes when the destination may not create them;
* hard links are found with a dictionary keyed by (st_dev, st_ino) and
  recreated with linkat;
* attributes are applied in the one order that keeps each of them:
  content, chown (which clears setuid bits and capabilities), every xattr and
  ACL (extras the destination added, such as inherited default ACLs, are
  removed), chmod, then the times - a directory's only after its contents.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from .endpoint import Endpoint, StatLike

_SLASH, _NUL = 0x2F, 0  # (int needles: see kernel.vfs.namei.SLASH)

CHUNK = 1 << 20
KEEP_OPEN = 64  # directories of the walk kept open; those above them are closed meanwhile
SELINUX = b"security.selinux"
ACL_ACCESS = b"system.posix_acl_access"
ACL_DEFAULT = b"system.posix_acl_default"
# errors after which going on cannot help: the destination is full, read-only or broken
ALWAYS_FATAL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE,
                          errno.ENOMEM})
DEST_FATAL = frozenset({errno.EIO, errno.EUCLEAN, errno.EBADMSG})

T = TypeVar("T")


class PathError(OSError):
    """An OSError naming the whole path; ``dest`` says which end failed."""

    def __init__(self, code: int, reason: str, path: str, dest: bool) -> None:
        super().__init__(code, reason, path)
        self.dest = dest


@dataclass
class IdMap:
    """``FROM:TO[:COUNT]`` ranges (like /proc/PID/uid_map); unmapped ids stay as they are."""

    ranges: list[tuple[int, int, int]] = field(default_factory=list)

    @classmethod
    def parse(cls, specs: tuple[str, ...] | list[str]) -> IdMap:
        ranges = []
        for spec in specs:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
                raise ValueError(f"{spec!r}: expected FROM:TO or FROM:TO:COUNT")
            src, dst = int(parts[0]), int(parts[1])
            count = int(parts[2]) if len(parts) == 3 else 1
            if count < 1 or max(src + count, dst + count) > 1 << 32:
                raise ValueError(f"{spec!r}: range out of bounds")
            ranges.append((src, dst, count))
        return cls(ranges)

    def __call__(self, ident: int) -> int:
        for src, dst, count in self.ranges:
            if src <= ident < src + count:
                return dst + ident - src
        return ident


@dataclass
class Options:
    owner: int | None = None            # -o: every copy owned by this uid
    group: int | None = None            # -g
    uid_map: IdMap = field(default_factory=IdMap)
    gid_map: IdMap = field(default_factory=IdMap)
    selinux: bytes | None = None        # -s: this security.selinux value on every copy
    keep_going: bool = False
    verbose: bool = False
    skip: frozenset[tuple[int, int]] = frozenset()  # source (dev, ino) never copied (the image)


@dataclass
class Stats:
    files: int = 0
    bytes: int = 0
    warnings: int = 0
    skipped: list[str] = field(default_factory=list)


def _open_path(side: Endpoint, fd: int, names: Sequence[bytes]) -> tuple[int, bool]:
    """The directory reached from directory ``fd`` through ``names`` (none of them
    followed if a symlink): its descriptor, and whether it is a new one to close."""
    own = False
    try:
        for name in names:
            nfd = side.opendir_at(fd, name)
            if own:
                side.close(fd)
            fd, own = nfd, True
    except BaseException:
        if own:
            side.close(fd)
        raise
    return fd, own


@dataclass
class _Frame:
    """A directory being copied: both open descriptors and what to apply when it is done."""

    sfd: int
    dfd: int
    own_sfd: bool
    own_dfd: bool
    names: list[bytes]
    spath: bytes
    dpath: bytes
    st: StatLike
    xattrs: list[tuple[bytes, bytes]]
    attr_dfd: int        # its attributes are set through (attr_dfd, attr_name)
    attr_name: bytes
    rel: tuple[bytes, ...]  # its place under the destination base directory
    up: _Frame | None = None  # the frame whose dfd attr_dfd is (None: not a frame's)
    sname: bytes = b""  # its name in the source directory it was found in
    # (st_dev, st_ino) of both directories, noted when their descriptors are closed while
    # the walk is deeper down (KEEP_OPEN), checked when they are opened again through ".."
    src_id: tuple[int, int] = (0, 0)
    dst_id: tuple[int, int] = (0, 0)
    i: int = 0
    new: _New | None = None  # made by the copy in a plain directory: what it got


@dataclass
class _New:
    """An entry the copy just made in a plain directory (``Copier._plain_dir``): the owner
    it got and the permissions it was made with; it has no extended attribute."""

    owner: tuple[int, int]
    mode: int  # -1: not known


@dataclass
class _Link:
    rel: tuple[bytes, ...]
    name: bytes
    remaining: int


@dataclass
class Source:
    parent: bytes   # the directory holding it (a user path), or the directory itself
    name: bytes     # b"": "copy the contents of parent" (a root-like source such as / or .)
    shown: bytes    # as the user wrote it, for messages


def _join(a: bytes, b: bytes) -> bytes:
    if not b:
        return a
    if not a:
        return b
    return a + b if a.endswith(b"/") else a + b"/" + b


def _has_magic(name: bytes) -> bool:
    return any(c in name for c in (b"*", b"?", b"["))


def valid_name(name: bytes) -> bool:
    """A single path component: never empty, '.', '..', or containing '/' or NUL."""
    return bool(name) and name not in (b".", b"..") and _SLASH not in name and _NUL not in name


def resolve_sources(src: Endpoint, args: list[bytes], prefix: str = "") -> list[Source]:
    """The entries the source arguments name: each one itself, the contents of a root-like
    directory (``/``, ``.``), or the matches of a glob in its last component.

    Every argument is checked before anything is copied; an error names it.
    """
    plan: list[Source] = []
    for arg in args:
        plan.extend(_resolve(src, arg, prefix))
    return plan


def _resolve(src: Endpoint, arg: bytes, prefix: str) -> list[Source]:
    def err(e: OSError, path: bytes) -> PathError:
        return PathError(e.errno or errno.EIO, e.strerror or os.strerror(e.errno or errno.EIO),
                         prefix + os.fsdecode(path), False)

    stripped = arg.rstrip(b"/")
    if not stripped:  # "/", "//"
        return [Source(arg, b"", arg)]
    head, _, base = stripped.rpartition(b"/")
    if base in (b".", b".."):
        shown = (head or (b"/" if stripped.startswith(b"/") else b".")) if base == b"." \
            else stripped
        return [Source(stripped, b"", shown)]
    parent = head if head else (b"/" if stripped.startswith(b"/") else b".")
    try:
        pfd = src.open_dir(parent)
    except OSError as e:
        raise err(e, parent) from None
    try:
        try:
            src.lstat_at(pfd, base)
            return [Source(parent, base, stripped)]
        except FileNotFoundError as e:
            if not _has_magic(base):
                raise err(e, stripped) from None
        except OSError as e:
            raise err(e, stripped) from None
        try:
            names = src.listdir(pfd)
        except OSError as e:
            raise err(e, parent) from None
        found = [n for n in names if fnmatch.fnmatchcase(n, base)]
        if not found:
            raise PathError(errno.ENOENT, "No such file or directory (nothing matches)",
                            prefix + os.fsdecode(stripped), False)
        return [Source(parent, n, _join(head, n) if head else n) for n in found]
    finally:
        src.close(pfd)


class Copier:
    """Copy from ``src`` to ``dst``; ``show(path)`` turns an endpoint path into text."""

    def __init__(self, src: Endpoint, dst: Endpoint, options: Options | None = None, *,
                 warn: Callable[[str], None] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 src_prefix: str = "", dst_prefix: str = "",
                 out: TextIO | None = None) -> None:
        self.src = src
        self.dst = dst
        self.opts = options or Options()
        self._warn = warn or (lambda msg: None)
        self.progress = progress
        self.src_prefix = src_prefix
        self.dst_prefix = dst_prefix
        self.out = out
        self.stats = Stats()
        self._links: dict[tuple[int, int], _Link] = {}
        self._dirs: set[tuple[int, int]] = set()
        self._plain: dict[int, bool] = {}  # destination directory descriptor -> _plain_dir
        # destination directory descriptor -> the owner a file made there gets: the same for
        # every file while the copy holds the image (its attributes are set after its files)
        self._new_owner: dict[int, tuple[int, int]] = {}
        self._stack: list[_Frame] = []
        self._base = -1
        self._deferred: list[tuple[bytes, StatLike, list[tuple[bytes, bytes]]]] = []
        self._warned: set[tuple[str, int]] = set()
        self._explicit_owner = (self.opts.owner is not None or self.opts.group is not None
                                or bool(self.opts.uid_map.ranges or self.opts.gid_map.ranges))
        self._fatal = ALWAYS_FATAL | (DEST_FATAL if dst.label == "image" else frozenset())

    # -- messages ----------------------------------------------------------------------------------
    def _show(self, path: bytes, dest: bool) -> str:
        return (self.dst_prefix if dest else self.src_prefix) + os.fsdecode(path)

    def warn(self, msg: str) -> None:
        self.stats.warnings += 1
        self._warn(msg)

    def _err(self, e: OSError, path: bytes, dest: bool) -> PathError:
        if isinstance(e, PathError):
            return e
        reason = e.strerror or os.strerror(e.errno or errno.EIO)
        return PathError(e.errno or errno.EIO, reason, self._show(path, dest), dest)

    def _s(self, fn: Callable[[], T], path: bytes) -> T:
        """Run a source-side call; an error names the source path."""
        try:
            return fn()
        except OSError as e:
            raise self._err(e, path, False) from None

    def _d(self, fn: Callable[[], T], path: bytes) -> T:
        """Run a destination-side call; an error names the destination path."""
        try:
            return fn()
        except OSError as e:
            raise self._err(e, path, True) from None

    def _failed(self, e: PathError) -> None:
        """Raise, or with --keep-going report and go on (never after a fatal error)."""
        if not self.opts.keep_going or e.errno in self._fatal:
            raise e
        self._warn(f"{e.filename}: {e.strerror}; skipped")
        self.stats.skipped.append(str(e.filename))

    # -- the command line ---------------------------------------------------------------------------
    def run(self, plan: list[Source], dest: bytes) -> Stats:
        """Copy every source (from ``resolve_sources``) to ``dest``: an existing directory,
        or a new name when there is one source."""
        dst = self.dst
        dst_st = self._d(lambda: dst.stat_path(dest), dest)
        if dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
            base_path = dest
            targets = [(s, s.name) for s in plan]
        else:
            if len(plan) != 1:
                why = "Not a directory" if dst_st is not None else "No such file or directory"
                raise PathError(errno.ENOTDIR if dst_st is not None else errno.ENOENT,
                                f"{why} (the destination of several sources must be an existing "
                                "directory)", self._show(dest, True), True)
            stripped = dest.rstrip(b"/") or dest
            head, _, name = stripped.rpartition(b"/")
            if not valid_name(name):
                raise PathError(errno.EINVAL, "not a usable destination name",
                                self._show(dest, True), True)
            base_path = head if head else (b"/" if stripped.startswith(b"/") else b".")
            targets = [(plan[0], name)]
        self._base = self._d(lambda: dst.open_dir(base_path), base_path)
        try:
            for source, name in targets:
                try:
                    self._copy_source(source, base_path, name)
                except PathError as e:
                    self._failed(e)
            for dpath, st, xattrs in self._deferred:
                try:
                    self._apply(self._base, b"", dpath, st, xattrs)
                except PathError as e:
                    self._failed(e)
        finally:
            dst.close(self._base)
        return self.stats

    def _copy_source(self, source: Source, base_path: bytes, name: bytes) -> None:
        src = self.src
        sfd = self._s(lambda: src.open_dir(source.parent), source.shown)
        spath = source.shown
        try:
            self._walk(sfd, source.name, spath, name, _join(base_path, name))
        finally:
            src.close(sfd)

    # -- the walk ------------------------------------------------------------------------------------
    def _walk(self, sfd: int, sname: bytes, spath: bytes, dname: bytes, dpath: bytes) -> None:
        self._walk_sfd = sfd  # where the bottom frame's source directory was opened from
        self.src.begin_walk(sfd, sname)
        try:
            self._walk_stack(sfd, sname, spath, dname, dpath)
        finally:
            self.src.end_walk()

    def _walk_stack(self, sfd: int, sname: bytes, spath: bytes, dname: bytes,
                    dpath: bytes) -> None:
        stack = self._stack
        self._entry(sfd, sname, spath, self._base, dname, dpath, ())
        try:
            while stack:
                fr = stack[-1]
                if fr.i == len(fr.names):
                    stack.pop()
                    up = fr.up
                    if up is not None and (up.sfd < 0 or up.dfd < 0):
                        try:
                            self._reopen(up, fr)
                        except PathError as e:
                            # the parent's rest cannot be copied: finish this one, skip that
                            self._finish_dir(fr)
                            self._failed(e)
                            up.i = len(up.names)
                            continue
                    self._finish_dir(fr)
                    continue
                name = fr.names[fr.i]
                fr.i += 1
                spath = _join(fr.spath, name)
                if not valid_name(name):
                    self._failed(PathError(errno.EINVAL, f"invalid file name {name!r} in the "
                                           "source directory", self._show(fr.spath, False), False))
                    continue
                self._entry(fr.sfd, name, spath, fr.dfd, name, _join(fr.dpath, name), fr.rel)
        except BaseException:
            # stop here, but leave what was copied whole: directories get their attributes
            while stack:
                self._finish_dir(stack.pop(), best_effort=True)
            raise

    def _entry(self, sfd: int, sname: bytes, spath: bytes, ddfd: int, dname: bytes, dpath: bytes,
               rel: tuple[bytes, ...]) -> None:
        try:
            self._copy_entry(sfd, sname, spath, ddfd, dname, dpath, rel)
        except PathError as e:
            self._failed(e)

    def _copy_entry(self, sfd: int, sname: bytes, spath: bytes, ddfd: int, dname: bytes,
                    dpath: bytes, rel: tuple[bytes, ...]) -> None:
        src, dst = self.src, self.dst
        try:
            st = src.lstat_at(sfd, sname)
        except OSError as e:
            if e.errno == errno.ELOOP:
                # a directory linked into its own subtree: the kernel will not name it twice
                self._loop_skipped(spath)
                return
            raise self._err(e, spath, False) from None
        mode = st.st_mode
        ftype = stat.S_IFMT(mode)
        key = (st.st_dev, st.st_ino)
        if key in self.opts.skip:
            self.warn(f"{self._show(spath, False)}: is the image itself; skipped")
            return
        if ftype == stat.S_IFDIR:
            self._enter_dir(sfd, sname, spath, ddfd, dname, dpath, rel, st, key)
            return
        if ftype == stat.S_IFSOCK:
            self.warn(f"{self._show(spath, False)}: socket skipped (sockets cannot be copied)")
            return
        if ftype in (stat.S_IFCHR, stat.S_IFBLK) and not dst.privileged:
            self._skip_device(spath)
            return
        if st.st_nlink > 1:
            link = self._links.get(key)
            if link is not None and self._hard_link(link, ddfd, dname, dpath):
                link.remaining -= 1
                if link.remaining <= 0:
                    del self._links[key]
                self._count(dpath, 0)
                return
        size = 0
        xattrs: list[tuple[bytes, bytes]] = []
        if ftype != stat.S_IFREG:  # a regular file's are read through its descriptor
            xattrs = self._s(lambda: src.xattrs_at(sfd, sname), spath)
        if ftype == stat.S_IFREG:
            size = st.st_size
            self._copy_file(sfd, sname, spath, ddfd, dname, dpath, st)
        elif ftype == stat.S_IFLNK:
            target = self._s(lambda: src.readlink_at(sfd, sname), spath)
            self._make(ddfd, dname, dpath, lambda: dst.symlink_at(target, ddfd, dname))
        elif ftype in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            try:
                self._make(ddfd, dname, dpath,
                           lambda: dst.mknod_at(ddfd, dname, ftype | 0o600, st.st_rdev))
            except PathError as e:
                if e.errno != errno.EPERM or ftype == stat.S_IFIFO:
                    raise
                self._skip_device(spath)
                return
        else:
            self.warn(f"{self._show(spath, False)}: unknown file type {ftype:o}; skipped")
            return
        if ftype == stat.S_IFLNK:  # just made (its mode is no matter)
            self._apply(ddfd, dname, dpath, st, xattrs,
                        self._new(ddfd, ddfd, dname, dpath, 0) if self._plain_dir(ddfd) else None)
        elif ftype != stat.S_IFREG:  # a regular file got them through its descriptor
            self._apply(ddfd, dname, dpath, st, xattrs)
        if st.st_nlink > 1:
            self._links[key] = _Link(rel, dname, st.st_nlink - 1)
        self._count(dpath, size)

    def _count(self, dpath: bytes, size: int) -> None:
        self.stats.files += 1
        self.stats.bytes += size
        if self.opts.verbose and self.out is not None:
            self.out.write(self._show(dpath, True) + "\n")
        if self.progress is not None:
            self.progress(self.stats.files, self.stats.bytes)

    def _skip_device(self, spath: bytes) -> None:
        if ("device", 0) not in self._warned or self.opts.verbose:
            self._warned.add(("device", 0))
            self.warn(f"{self._show(spath, False)}: device node skipped (creating device "
                      "nodes needs root)")
        else:
            self.stats.warnings += 1

    def _enter_dir(self, sfd: int, sname: bytes, spath: bytes, ddfd: int, dname: bytes,
                   dpath: bytes, rel: tuple[bytes, ...], st: StatLike,
                   key: tuple[int, int]) -> None:
        src = self.src
        if key in self._dirs:
            self._loop_skipped(spath)
            return
        xattrs = self._s(lambda: src.xattrs_at(sfd, sname), spath)
        new_sfd = self._s(lambda: src.opendir_at(sfd, sname), spath)
        try:
            names = self._s(lambda: src.listdir(new_sfd), spath)
            new_dfd, own, made = self._ensure_dir(ddfd, dname, dpath)
            # (its mode may have gained the setgid bit of its parent: set in any case)
            new = self._new(ddfd, new_dfd, b"", dpath, -1) \
                if made and self._plain_dir(ddfd) else None
        except BaseException:
            src.close(new_sfd)
            raise
        self._dirs.add(key)
        up = self._stack[-1] if self._stack and self._stack[-1].dfd == ddfd else None
        self._stack.append(_Frame(new_sfd, new_dfd, True, own, names, spath, dpath, st, xattrs,
                                  ddfd, dname, rel + (dname,) if dname else rel, up, sname,
                                  new=new))
        if len(self._stack) > KEEP_OPEN:
            self._close_frame(self._stack[-KEEP_OPEN - 1])
        self._count(dpath, 0)

    def _close_frame(self, fr: _Frame) -> None:
        """Close a directory's descriptors while the walk is deep below it (a tree deeper
        than the descriptors a process may hold is copied all the same); ``_reopen``
        opens them again through ".." when the walk comes back."""
        src, dst = self.src, self.dst
        if fr.own_sfd and fr.sfd >= 0:
            st = src.lstat_at(fr.sfd, b"")
            fr.src_id = (st.st_dev, st.st_ino)
            src.close(fr.sfd)
            fr.sfd = -1
        if fr.own_dfd and fr.dfd >= 0:
            st = dst.lstat_at(fr.dfd, b"")
            fr.dst_id = (st.st_dev, st.st_ino)
            self._forget_dir(fr.dfd)
            dst.close(fr.dfd)
            fr.dfd = -1

    def _reopen(self, fr: _Frame, child: _Frame) -> None:
        """Open ``fr``'s closed descriptors again: through ``child``'s "..", or, when that
        leads elsewhere (``child`` was moved), by name from the nearest open directory
        below. The same directories as before, or a PathError (``fr`` itself was moved)."""
        stack = self._stack
        at = stack.index(fr)
        for is_dst in (False, True):
            side = self.dst if is_dst else self.src
            if (fr.dfd if is_dst else fr.sfd) >= 0:
                continue
            ident = fr.dst_id if is_dst else fr.src_id
            path = fr.dpath if is_dst else fr.spath
            err = self._d if is_dst else self._s
            fd = -1
            try:
                fd = side.opendir_at(child.dfd if is_dst else child.sfd, b"..")
                st = side.lstat_at(fd, b"")
                if (st.st_dev, st.st_ino) != ident:
                    side.close(fd)
                    fd = -1
            except OSError:
                fd = -1
            if fd < 0:
                fd = err(lambda s=side, d=is_dst: self._open_by_name(s, d, at), path)  # type: ignore[misc]
                st = side.lstat_at(fd, b"")
                if (st.st_dev, st.st_ino) != ident:
                    side.close(fd)
                    raise PathError(errno.ESTALE, "directory moved while it was copied",
                                    self._show(path, is_dst), is_dst)
            if is_dst:
                fr.dfd = fd
            else:
                fr.sfd = fd
        child.attr_dfd = fr.dfd

    def _open_by_name(self, side: Endpoint, is_dst: bool, at: int) -> int:
        """The directory of frame ``at`` opened again by the names of the frames from the
        nearest one below it with an open descriptor (or the walk's start)."""
        stack = self._stack
        a = at - 1
        while a >= 0 and (stack[a].dfd if is_dst else stack[a].sfd) < 0:
            a -= 1
        if a >= 0:
            fd = stack[a].dfd if is_dst else stack[a].sfd
        else:
            fd = self._base if is_dst else self._walk_sfd
        names = [stack[k].attr_name if is_dst else stack[k].sname for k in range(a + 1, at + 1)]
        return _open_path(side, fd, names)[0]

    def _loop_skipped(self, spath: bytes) -> None:
        self.warn(f"{self._show(spath, False)}: directory already copied (a directory loop "
                  "or hard-linked directory in the source); skipped")

    def _finish_dir(self, fr: _Frame, best_effort: bool = False) -> None:
        try:
            if not fr.attr_name:
                # the base directory itself: after every source (later ones change it)
                self._deferred.append((fr.dpath, fr.st, fr.xattrs))
            elif fr.up is None or fr.up.dfd >= 0:  # (a parent closed only while unwinding)
                self._apply(fr.attr_dfd, fr.attr_name, fr.dpath, fr.st, fr.xattrs, fr.new)
        except PathError as e:
            if not best_effort:
                self._failed(e)
        finally:
            if fr.own_sfd and fr.sfd >= 0:
                self.src.close(fr.sfd)
            if fr.own_dfd and fr.dfd >= 0:
                self._forget_dir(fr.dfd)
                self.dst.close(fr.dfd)

    # -- creating ------------------------------------------------------------------------------------
    def _make(self, ddfd: int, dname: bytes, dpath: bytes, create: Callable[[], T]) -> T:
        """Create a non-directory; an existing one is replaced, a directory is kept (error)."""
        dst = self.dst
        try:
            return create()
        except FileExistsError:
            pass
        except OSError as e:
            raise self._err(e, dpath, True) from None
        old = self._d(lambda: dst.lstat_at(ddfd, dname), dpath)
        if stat.S_ISDIR(old.st_mode):
            raise PathError(errno.EISDIR, "Is a directory (cannot overwrite a directory with a "
                            "non-directory)", self._show(dpath, True), True)
        self._d(lambda: dst.unlink_at(ddfd, dname, False), dpath)
        return self._d(create, dpath)

    def _ensure_dir(self, ddfd: int, dname: bytes, dpath: bytes) -> tuple[int, bool, bool]:
        """Open (creating it 0700 if needed) directory ``dname``; never through a symlink.
        (Its descriptor, whether that is a new one, whether the directory is.)"""
        dst = self.dst
        if not dname:
            return ddfd, False, False
        made = False
        try:
            dst.mkdir_at(ddfd, dname, 0o700)
            made = True
        except FileExistsError:
            old = self._d(lambda: dst.lstat_at(ddfd, dname), dpath)
            if not stat.S_ISDIR(old.st_mode):
                raise PathError(errno.ENOTDIR, "Not a directory (cannot overwrite a non-directory "
                                "with a directory)", self._show(dpath, True), True) from None
        except OSError as e:
            raise self._err(e, dpath, True) from None
        return self._d(lambda: dst.opendir_at(ddfd, dname), dpath), True, made

    def _copy_file(self, sfd: int, sname: bytes, spath: bytes, ddfd: int, dname: bytes,
                   dpath: bytes, st: StatLike) -> None:
        """Copy the data, then the attributes through the open descriptors (no path walks:
        the source's xattrs are read through its descriptor too)."""
        src, dst = self.src, self.dst
        size = st.st_size
        # (the calls of every file are wrapped in try blocks, not in _s/_d: a closure and a
        # call each, for every file of a large copy)
        try:
            fin = src.open_read(sfd, sname)
        except OSError as e:
            raise self._err(e, spath, False) from None
        try:
            try:
                xattrs = src.xattrs_at(fin, b"")
                regions = src.data_regions(fin, size)
            except OSError as e:
                raise self._err(e, spath, False) from None
            # where a new file gets exactly the mode asked for, ask for its permissions (the
            # special bits come after the owner, which clears them); elsewhere 0600 until done
            plain = self._plain_dir(ddfd)
            mode = stat.S_IMODE(st.st_mode) & 0o777 if plain else 0o600
            fout = self._make(ddfd, dname, dpath, lambda: dst.create_at(ddfd, dname, mode))
            done = False
            try:
                end = 0
                while True:
                    try:
                        region = next(regions, None)
                    except OSError as e:
                        raise self._err(e, spath, False) from None
                    if region is None:
                        break
                    start, stop = region
                    pos = start
                    while pos < stop:
                        n = min(CHUNK, stop - pos)
                        try:
                            chunk = src.pread(fin, n, pos)
                        except OSError as e:
                            raise self._err(e, spath, False) from None
                        if not chunk:
                            raise PathError(errno.EIO, "file shrank while it was copied",
                                            self._show(spath, False), False)
                        view = memoryview(chunk)
                        while view:
                            try:
                                w = dst.pwrite(fout, view, pos)
                            except OSError as e:
                                raise self._err(e, dpath, True) from None
                            view = view[w:]
                            pos += w
                        if self.progress is not None and stop - start > CHUNK:
                            self.progress(self.stats.files, self.stats.bytes + pos)
                    end = stop
                if end != size:
                    self._d(lambda: dst.ftruncate(fout, size), dpath)
                done = True  # the data is whole: an attribute error leaves the copy
                self._apply(fout, b"", dpath, st, xattrs,
                            self._new(ddfd, fout, b"", dpath, mode) if plain else None)
            finally:
                dst.close(fout)
                if not done:
                    # never leave a truncated copy behind
                    try:
                        dst.unlink_at(ddfd, dname, False)
                    except OSError:
                        pass
        finally:
            src.close(fin)

    def _hard_link(self, link: _Link, ddfd: int, dname: bytes, dpath: bytes) -> bool:
        """Link to the first copy; False when that is impossible (copy the file instead)."""
        dst = self.dst
        odfd, own = self._dst_dir(link.rel, dpath)
        try:
            self._make(ddfd, dname, dpath, lambda: dst.link_at(odfd, link.name, ddfd, dname))
            return True
        except PathError as e:
            # too many links for the destination, or the first copy was replaced since
            if e.errno in (errno.EMLINK, errno.ENOENT, errno.EPERM):
                return False
            raise
        finally:
            if own:
                dst.close(odfd)

    def _dst_dir(self, rel: tuple[bytes, ...], dpath: bytes) -> tuple[int, bool]:
        """A descriptor of the destination directory at ``rel`` under the base."""
        if not rel:
            return self._base, False
        for fr in reversed(self._stack):
            if fr.rel == rel and fr.dfd >= 0:
                return fr.dfd, False
        return self._d(lambda: _open_path(self.dst, self._base, rel), dpath)

    # -- attributes ------------------------------------------------------------------------------------
    def _owner(self, st: StatLike) -> tuple[int, int]:
        if not self._explicit_owner:
            return st.st_uid, st.st_gid
        o = self.opts
        uid = o.owner if o.owner is not None else o.uid_map(st.st_uid)
        gid = o.group if o.group is not None else o.gid_map(st.st_gid)
        return uid, gid

    def _forget_dir(self, ddfd: int) -> None:
        """A destination directory descriptor is closed: its number may be reused."""
        self._plain.pop(ddfd, None)
        self._new_owner.pop(ddfd, None)

    def _plain_dir(self, ddfd: int) -> bool:
        """Whether a file made in destination directory ``ddfd`` gets exactly the mode asked
        for and no attribute: the destination says so and the directory has no default ACL."""
        plain = self._plain.get(ddfd)
        if plain is None:
            plain = self.dst.exact_create and ACL_DEFAULT not in self._d(
                lambda: self.dst.listxattr_at(ddfd, b""), b"")
            self._plain[ddfd] = plain
        return plain

    def _new(self, ddfd: int, dfd: int, name: bytes, dpath: bytes, mode: int) -> _New:
        """What entry ``name`` of ``dfd`` (b"": ``dfd``), just made with ``mode`` in plain
        directory ``ddfd``, got: the owner is learned once per directory."""
        owner = self._new_owner.get(ddfd)
        if owner is None:
            now = self._d(lambda: self.dst.lstat_at(dfd, name), dpath)
            owner = self._new_owner[ddfd] = (now.st_uid, now.st_gid)
        return _New(owner, mode)

    def _apply(self, dfd: int, name: bytes, dpath: bytes, st: StatLike,
               xattrs: list[tuple[bytes, bytes]], new: _New | None = None) -> None:
        """Owner, xattrs and ACLs, mode, then times (each one clears nothing set before it).

        ``new``: what an entry the copy just made has already; that is left alone."""
        dst = self.dst
        ftype = stat.S_IFMT(st.st_mode)
        uid, gid = self._owner(st)
        if new is None or new.owner != (uid, gid):
            try:
                dst.chown_at(dfd, name, uid, gid)
            except PermissionError as e:
                if dst.privileged or self._explicit_owner:
                    raise self._err(e, dpath, True) from None
                # as cp -a does without root: the copies stay ours
            except OSError as e:
                raise self._err(e, dpath, True) from None
        want = set()
        selinux = self.opts.selinux
        for xname, value in xattrs:
            if xname == SELINUX and selinux is not None:
                continue
            if self._setxattr(dfd, name, dpath, xname, value):
                want.add(xname)
        if selinux is not None and self._setxattr(dfd, name, dpath, SELINUX, selinux):
            want.add(SELINUX)
        if new is None:  # (a new entry has none but those just set)
            for xname in self._d(lambda: dst.listxattr_at(dfd, name), dpath):
                if xname not in want:
                    # inherited from a default ACL, or set by the destination's LSM
                    try:
                        dst.removexattr_at(dfd, name, xname)
                    except OSError:
                        pass
        perm = stat.S_IMODE(st.st_mode)
        if ftype != stat.S_IFLNK and (new is None or perm != new.mode or ACL_ACCESS in want):
            self._d(lambda: dst.chmod_at(dfd, name, perm), dpath)
        try:
            dst.utimens_at(dfd, name, st.st_atime_ns, st.st_mtime_ns)
        except OSError as e:
            raise self._err(e, dpath, True) from None

    def _setxattr(self, dfd: int, name: bytes, dpath: bytes, xname: bytes, value: bytes) -> bool:
        try:
            self.dst.setxattr_at(dfd, name, xname, value)
            return True
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
                raise PathError(e.errno or errno.EIO,
                                f"{e.strerror} (extended attribute {os.fsdecode(xname)})",
                                self._show(dpath, True), True) from None
            # a namespace the destination does not hold, or not for us (trusted.* without root)
            ns = os.fsdecode(xname.split(b".", 1)[0])
            if (ns, e.errno or 0) not in self._warned or self.opts.verbose:
                self._warned.add((ns, e.errno or 0))
                self.warn(f"{self._show(dpath, True)}: extended attribute {os.fsdecode(xname)} "
                          f"not copied: {e.strerror}"
                          + ("" if self.opts.verbose else " (further ones in this namespace "
                             "are not reported)"))
            else:
                self.stats.warnings += 1
            return False
