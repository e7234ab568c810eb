"""Mount and walk a (damaged) image through kernel.sys, in a child process with bounded time
and memory; used by the fuzz tests and by ``python tests/robust/fuzzwalk.py`` for long runs.

Every outcome must be a clean walk or OSErrors with a Linux errno: any other exception, a
walk that outlives its time bound, or memory beyond the address-space limit is a bug.

    python tests/robust/fuzzwalk.py IMAGE SEED COUNT [SECONDS]

mutates IMAGE in place COUNT times (restoring it after each), walks it each time, and prints
one JSON line: {"walks": n, "clean": n, "errnos": {...}}; exit status 3 with the traceback
(and the mutation) on a bug, 4 when a walk hung.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import kernel  # noqa: E402
from kernel import Kernel  # noqa: E402

BLOCK = 4096
UNIT = 1024  # granularity of the metadata/data classification
WALK_SECONDS = 20
READ_LIMIT = 1 << 20  # bytes read per file: enough to reach every extent of small images
MAX_ENTRIES = 20000


class Hang(Exception):
    pass


def walk(image: str, digests: set[bytes] | None = None) -> tuple[int, dict[str, int]]:
    """Mount ``image`` read-only and visit everything; (entries seen, errno counts).

    With ``digests``, adds the digest of every 1 KiB unit of file data read."""
    errs: dict[str, int] = {}
    seen = 0

    def note(e: OSError) -> None:
        if not isinstance(e.errno, int) or e.errno not in errno.errorcode:
            raise AssertionError(f"OSError without a Linux errno: {e!r}")
        name = errno.errorcode[e.errno]
        errs[name] = errs.get(name, 0) + 1

    with Kernel(mb=16) as k:
        s = k.sys
        try:
            root = k.mount_dev(k.disk_add(image, readonly=True), flags=kernel.MS_RDONLY)
        except OSError as e:
            note(e)
            return 0, errs
        todo = [root]
        while todo and seen < MAX_ENTRIES:
            d = todo.pop()
            try:
                fd = s.open(d, kernel.O_RDONLY | kernel.O_DIRECTORY)
            except OSError as e:
                note(e)
                continue
            try:
                names = []
                for _ in range(100000):
                    batch = s.getdents64(fd, 65536)
                    if not batch:
                        break
                    names += [x.d_name for x in batch if x.d_name not in (b".", b"..")]
            except OSError as e:
                note(e)
            finally:
                s.close(fd)
            for n in names:
                seen += 1
                p = d + "/" + os.fsdecode(n)
                try:
                    st = s.lstat(p)
                    for x in s.llistxattr(p):
                        try:
                            s.lgetxattr(p, x)
                        except OSError as e:
                            note(e)
                    kind = st.st_mode & 0o170000
                    if kind == 0o040000:
                        todo.append(p)
                    elif kind == 0o120000:
                        s.readlink(p)
                    elif kind == 0o100000:
                        f = s.open(p, kernel.O_RDONLY)
                        try:
                            body = s.read(f, READ_LIMIT if digests is None else 1 << 30)
                            if digests is not None:
                                for i in range(0, len(body) - UNIT + 1, UNIT):
                                    digests.add(hashlib.sha1(body[i:i + UNIT]).digest())
                            s.lseek(f, 0, 3)  # SEEK_DATA
                        except OSError as e:
                            if e.errno != errno.ENXIO:
                                note(e)
                        finally:
                            s.close(f)
                except OSError as e:
                    note(e)
    return seen, errs


def write_some(image: str) -> int:
    """Mount ``image`` read-write and create, write, rename and delete a few things; every
    step may fail with an OSError, nothing else. Returns how many steps succeeded."""
    ok = 0
    with Kernel(mb=16) as k:
        try:
            root = k.mount_dev(k.disk_add(image, readonly=False))
        except OSError:
            return 0
        s = k.sys
        for i in range(5):
            try:
                fd = s.open(f"{root}/new{i}", kernel.O_CREAT | kernel.O_WRONLY, 0o644)
                try:
                    s.write(fd, b"x" * (i * 5000))
                finally:
                    s.close(fd)
                s.mkdir(f"{root}/dir{i}", 0o755)
                s.rename(f"{root}/new{i}", f"{root}/dir{i}/moved")
                s.setxattr(f"{root}/dir{i}/moved", b"user.k", b"v" * 100, 0)
                ok += 1
            except OSError:
                pass
        try:
            fd = s.open(root, kernel.O_RDONLY | kernel.O_DIRECTORY)
            names = [e.d_name for e in s.getdents64(fd, 1 << 16)]
            s.close(fd)
        except OSError:
            names = []
        for n in names:
            if n in (b".", b"..") or n.startswith(b"dir"):
                continue
            try:
                s.unlink(f"{root}/{os.fsdecode(n)}")
                ok += 1
            except OSError:
                pass
    return ok


def mutate(rnd: random.Random, data_blocks: list[int], size: int) -> list[tuple[int, bytes]]:
    """Byte flips, zeroed blocks and overwritten words, mostly in metadata-looking units."""
    out: list[tuple[int, bytes]] = []
    for _ in range(rnd.choice([1, 1, 2, 3, 8])):
        kind = rnd.random()
        unit = rnd.choice(data_blocks) if data_blocks and rnd.random() < 0.9 \
            else rnd.randrange(size // UNIT)
        base = unit * UNIT
        if kind < 0.5:
            off = base + rnd.randrange(UNIT)
            out.append((off, bytes([rnd.randrange(256)])))
        elif kind < 0.7:
            off = base + rnd.randrange(0, UNIT, 4)
            out.append((off, rnd.choice([b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x01\0\0\0",
                                          b"\0\0\0\x80"])))
        elif kind < 0.85:
            out.append((base - base % BLOCK, bytes(BLOCK)))
        else:
            off = base + rnd.randrange(UNIT - 64)
            out.append((off, rnd.randbytes(rnd.randrange(1, 64))))
    return out


def main() -> int:
    image, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 1e9
    limit = 2 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def on_alarm(*_a: object) -> None:
        raise Hang()

    signal.signal(signal.SIGALRM, on_alarm)
    rnd = random.Random(seed)
    size = os.path.getsize(image)
    # metadata-looking units: not zero, and not a unit of any file's data
    data: set[bytes] = set()
    walk(image, data)
    blocks = []
    with open(image, "rb") as f:
        for i in range(size // UNIT):
            unit = f.read(UNIT)
            if any(unit) and hashlib.sha1(unit).digest() not in data:
                blocks.append(i)
    stats = {"walks": 0, "clean": 0, "errnos": {}}
    deadline = time.monotonic() + seconds
    for _i in range(count):
        if time.monotonic() > deadline:
            break
        muts = mutate(rnd, blocks, size)
        truncate = rnd.random() < 0.05
        with open(image, "r+b") as f:
            saved = []
            for off, new in muts:
                f.seek(off)
                saved.append((off, f.read(len(new))))
                f.seek(off)
                f.write(new)
            tail = b""
            cut = size
            if truncate:
                cut = rnd.randrange(size // 8, size) // 512 * 512
                f.seek(cut)
                tail = f.read()
                f.truncate(cut)
        before = os.stat(image)
        signal.alarm(WALK_SECONDS)
        shown = [(o, n.hex()) for o, n in muts]  # for the report: JSON holds no bytes
        try:
            _seen, errs = walk(image)
        except Hang:
            print(json.dumps({"hang": shown, "truncate": cut}), flush=True)
            return 4
        except BaseException:
            print(json.dumps({"bug": traceback.format_exc(), "mutations": shown,
                              "truncate": cut}), flush=True)
            return 3
        finally:
            signal.alarm(0)
        after = os.stat(image)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            print(json.dumps({"bug": "the image was written"}), flush=True)
            return 3
        stats["walks"] += 1
        if not errs:
            stats["clean"] += 1
        for k2, v in errs.items():
            stats["errnos"][k2] = stats["errnos"].get(k2, 0) + v  # type: ignore[index]
        with open(image, "r+b") as f:
            if truncate:
                f.seek(cut)
                f.write(tail)
            for off, old in reversed(saved):
                f.seek(off)
                f.write(old)
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
