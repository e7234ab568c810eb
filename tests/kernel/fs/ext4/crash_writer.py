"""The writer of the crash test (test_journal_crash.py): runs operations on an image through
our kernel until it is killed, recording each file it has fsync'ed.

Usage: python crash_writer.py IMAGE RECORD SEED
Each RECORD line, "name sha256", is written (and fsync'ed on the host) only after the
kernel's fsync of that file returned.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys

import kernel
from kernel import Kernel


def _die_before_checkpoint(after: int) -> None:
    """Simulate a crash between a commit block and its checkpoint (CRASH_AFTER_COMMITS=N:
    the process dies when the N-th commit is durable in the log, before anything more of
    it is written home)."""
    from kernel.fs.ext4.jbd2 import commit

    real = commit.JournalWriter.commit
    count = [0]

    def die(writer: commit.JournalWriter) -> None:
        writer.dev.drain()  # what the commit issued behind is on the image
        os._exit(9)

    def commit_then_die(self: commit.JournalWriter) -> bool:
        if self.running:
            count[0] += 1
            if count[0] >= after:
                self.checkpoint = lambda: die(self)  # type: ignore[method-assign]
                real(self)
                die(self)
        return real(self)

    commit.JournalWriter.commit = commit_then_die  # type: ignore[method-assign]


def main() -> None:
    image, record, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if os.environ.get("CRASH_AFTER_COMMITS"):
        _die_before_checkpoint(int(os.environ["CRASH_AFTER_COMMITS"]))
    rnd = random.Random(seed)
    rec = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    k = Kernel(mb=16)
    root = k.mount_dev(k.disk_add(image, readonly=False))
    s = k.sys
    s.mkdir(f"{root}/scratch", 0o755)
    scratch: list[str] = []
    held: list[int] = []
    n = 0
    while True:
        n += 1
        op = rnd.random()
        if op < 0.25:  # a durable file: written, fsync'ed, recorded, never touched again
            name = f"dur-{n}"
            data = rnd.randbytes(rnd.choice([0, 1, 4096, 10000, 150000]))
            fd = s.open(f"{root}/{name}", kernel.O_CREAT | kernel.O_WRONLY, 0o644)
            s.write(fd, data)
            if rnd.random() < 0.5:
                s.setxattr(f"{root}/{name}", b"user.d", name.encode(), 0)
            s.fsync(fd)
            s.close(fd)
            os.write(rec, f"{name} {hashlib.sha256(data).hexdigest()}\n".encode())
            os.fsync(rec)
        elif op < 0.55 or not scratch:  # scratch writes
            name = f"scratch/s{rnd.randrange(60)}"
            fd = s.open(f"{root}/{name}", kernel.O_CREAT | kernel.O_WRONLY, 0o644)
            s.pwrite(fd, rnd.randbytes(rnd.choice([10, 3000, 70000])), rnd.choice([0, 5000, 1 << 20]))
            s.close(fd)
            if name not in scratch:
                scratch.append(name)
        elif op < 0.65:
            name = scratch.pop(rnd.randrange(len(scratch)))
            s.unlink(f"{root}/{name}")
        elif op < 0.75:
            a = rnd.randrange(len(scratch))
            new = f"scratch/s{rnd.randrange(60)}"
            s.rename(f"{root}/{scratch[a]}", f"{root}/{new}")
            scratch.pop(a)
            if new not in scratch:
                scratch.append(new)
        elif op < 0.85:
            s.truncate(f"{root}/{rnd.choice(scratch)}", rnd.choice([0, 100, 9000, 300000]))
        elif op < 0.92:
            d = f"{root}/scratch/d{rnd.randrange(5)}"
            try:
                s.mkdir(d, 0o755)
                for i in range(rnd.randrange(30)):
                    fd = s.open(f"{d}/e{i}", kernel.O_CREAT | kernel.O_WRONLY, 0o600)
                    s.close(fd)
            except OSError:
                for e in range(30):
                    try:
                        s.unlink(f"{d}/e{e}")
                    except OSError:
                        pass
                s.rmdir(d)
        elif op < 0.95:  # an open, unlinked file (on the orphan list until closed)
            if len(held) < 3:
                name = f"{root}/held-{n}"
                fd = s.open(name, kernel.O_CREAT | kernel.O_RDWR, 0o600)
                s.write(fd, rnd.randbytes(rnd.choice([100, 20000])))
                s.unlink(name)
                held.append(fd)
            else:
                s.close(held.pop(0))
        elif op < 0.97:
            s.setxattr(f"{root}/{rnd.choice(scratch)}", b"user.x", rnd.randbytes(rnd.randrange(300)), 0)
        else:
            s.sync()


if __name__ == "__main__":
    main()
