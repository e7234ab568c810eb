"""A POSIX semantics run, executed against a directory by test_lklfuse_rw.py: on an lklfuse
mount and on the host kernel's native ext4 mount, the results must be the same.

Usage: python3 posix_run.py DIR STEP    (standard library only: runs as any user)
Prints one JSON list of [operation, result] pairs, result being "ok", an errno name or a value.
"""

from __future__ import annotations

import errno
import json
import os
import sys


def attempt(out: list, label: str, fn) -> None:
    try:
        r = fn()
        out.append([label, "ok" if r is None else r])
    except OSError as e:
        out.append([label, errno.errorcode.get(e.errno or 0, str(e.errno))])


def owner_step(d: str, out: list) -> None:
    """As root: the shared layout."""
    attempt(out, "mkdir shared", lambda: os.mkdir(f"{d}/shared", 0o755))
    attempt(out, "chown shared", lambda: os.chown(f"{d}/shared", 1000, 1000))
    attempt(out, "mkdir sticky", lambda: os.mkdir(f"{d}/sticky", 0o777))
    attempt(out, "chmod sticky", lambda: os.chmod(f"{d}/sticky", 0o1777))
    attempt(out, "mkdir setgid", lambda: os.mkdir(f"{d}/setgid", 0o775))
    attempt(out, "chown setgid", lambda: os.chown(f"{d}/setgid", 0, 1001))
    attempt(out, "chmod setgid", lambda: os.chmod(f"{d}/setgid", 0o2777))


def user_a_step(d: str, out: list) -> None:
    """As uid 1000: files of its own, in its directory and the sticky one."""
    def write(p: str, data: bytes, mode: int = 0o644) -> None:
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    attempt(out, "create private", lambda: write(f"{d}/shared/private", b"secret", 0o600))
    attempt(out, "create public", lambda: write(f"{d}/shared/public", b"hello", 0o644))
    attempt(out, "create sticky/a", lambda: write(f"{d}/sticky/a", b"a"))
    attempt(out, "create setgid/a", lambda: write(f"{d}/setgid/a", b"a"))
    attempt(out, "stat setgid/a gid", lambda: os.stat(f"{d}/setgid/a").st_gid)
    attempt(out, "mkdir setgid/sub mode", lambda: (os.mkdir(f"{d}/setgid/sub"),
                                                   os.stat(f"{d}/setgid/sub").st_mode)[1])
    attempt(out, "link", lambda: os.link(f"{d}/shared/public", f"{d}/shared/public2"))
    attempt(out, "symlink", lambda: os.symlink("public", f"{d}/shared/sl"))
    attempt(out, "mkfifo", lambda: os.mkfifo(f"{d}/shared/fifo", 0o640))
    attempt(out, "truncate", lambda: os.truncate(f"{d}/shared/public", 2))
    attempt(out, "utime", lambda: os.utime(f"{d}/shared/public", ns=(1_000_000_123, 2_000_000_456)))
    attempt(out, "rename", lambda: os.rename(f"{d}/shared/public2", f"{d}/shared/renamed"))
    attempt(out, "chmod other-owned", lambda: os.chmod(f"{d}/sticky", 0o777))
    attempt(out, "chown to root", lambda: os.chown(f"{d}/shared/public", 0, 0))
    attempt(out, "rmdir shared", lambda: os.rmdir(f"{d}/shared"))
    attempt(out, "mkdir in root dir", lambda: os.mkdir(f"{d}/nope"))


def user_b_step(d: str, out: list) -> None:
    """As uid 1001: what others may and may not do."""
    attempt(out, "read private", lambda: open(f"{d}/shared/private", "rb").read())
    attempt(out, "read public", lambda: open(f"{d}/shared/public", "rb").read().decode())
    attempt(out, "write public", lambda: open(f"{d}/shared/public", "ab").close())
    attempt(out, "unlink in shared", lambda: os.unlink(f"{d}/shared/public"))
    attempt(out, "create in shared", lambda: open(f"{d}/shared/b", "wb").close())
    attempt(out, "unlink sticky/a", lambda: os.unlink(f"{d}/sticky/a"))
    attempt(out, "create sticky/b", lambda: open(f"{d}/sticky/b", "wb").close())
    attempt(out, "rename sticky/a", lambda: os.rename(f"{d}/sticky/a", f"{d}/sticky/c"))
    attempt(out, "utime now others", lambda: os.utime(f"{d}/shared/public"))
    attempt(out, "readlink", lambda: os.readlink(f"{d}/shared/sl"))
    attempt(out, "chmod public", lambda: os.chmod(f"{d}/shared/public", 0o666))
    attempt(out, "access W public", lambda: os.access(f"{d}/shared/public", os.W_OK))
    attempt(out, "access R public", lambda: os.access(f"{d}/shared/public", os.R_OK))


def final_step(d: str, out: list) -> None:
    """As root: the resulting tree."""
    for dirpath, dirnames, filenames in sorted(os.walk(d)):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, d)
            if rel.startswith("lost+found"):
                continue
            st = os.lstat(p)
            size = st.st_size if not os.path.isdir(p) else None
            out.append([rel, [st.st_mode, st.st_uid, st.st_gid, st.st_nlink, size,
                              st.st_mtime_ns if rel == "shared/public" else None]])


if __name__ == "__main__":
    d, step = sys.argv[1], sys.argv[2]
    result: list = []
    {"owner": owner_step, "a": user_a_step, "b": user_b_step, "final": final_step}[step](d, result)
    print(json.dumps(result))
