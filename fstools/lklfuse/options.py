"""lklfuse's ``-o`` options: ours (LKL's names) apart from the ones FUSE takes.

LKL's lklfuse takes ``-o type=,part=,ro,rw,opts=,lock=,mb=,log=``; within
``opts=`` a comma is written ``\\,`` (``opts=data=ordered\\,noatime``). Every
other option goes to FUSE (``allow_other``, ``default_permissions``,
``fsname=``, ``subtype=``, ...), except ``uid=``/``gid=`` which, as in
libfuse's high-level API, make every file appear owned by that user/group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..common.cli import EXIT_USAGE, FSTYPES, ToolError

# FUSE options that only make sense to the mount helper or are ours to decide
_DROP = {"auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "defaults", "exec",
         "noexec", "suid", "nosuid", "dev", "nodev", "async", "atime", "relatime", "noatime"}


@dataclass
class Options:
    fstype: str | None = None
    part: int | None = None
    ro: bool = False
    rw: bool = False
    fs_opts: str = ""
    lock: str | None = None
    mb: int = 64
    log: str | None = None
    uid: int | None = None
    gid: int | None = None
    fuse: set[str] = field(default_factory=set)


def split_escaped(text: str) -> list[str]:
    """Split on commas not escaped as ``\\,`` (and unescape them)."""
    out, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] == ",":
            cur.append(",")
            i += 2
            continue
        if c == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [o for o in out if o]


def _int(name: str, value: str, minimum: int = 0) -> int:
    try:
        n = int(value, 0)
    except ValueError:
        raise ToolError(f"option {name}={value}: not a number", EXIT_USAGE) from None
    if n < minimum:
        raise ToolError(f"option {name}={value}: must be at least {minimum}", EXIT_USAGE)
    return n


def parse(option_strings: list[str]) -> Options:
    o = Options()
    for text in option_strings:
        for item in split_escaped(text):
            key, eq, value = item.partition("=")
            if key == "type":
                if value not in FSTYPES:
                    raise ToolError(f"option type={value}: unknown filesystem type (choose from "
                                    + ", ".join(FSTYPES) + ")", EXIT_USAGE)
                o.fstype = value
            elif key == "part":
                o.part = _int(key, value)
            elif key == "ro" and not eq:
                o.ro, o.rw = True, False
            elif key == "rw" and not eq:
                o.rw, o.ro = True, False
            elif key == "opts":
                o.fs_opts = ",".join(filter(None, [o.fs_opts, value]))
            elif key == "lock":
                if not value:
                    raise ToolError("option lock= needs a file name", EXIT_USAGE)
                o.lock = value
            elif key == "mb":
                o.mb = _int(key, value, 4)
            elif key == "log":
                o.log = value
            elif key == "uid":
                o.uid = _int(key, value)
            elif key == "gid":
                o.gid = _int(key, value)
            elif key in _DROP:
                continue
            else:
                o.fuse.add(item)
    return o
