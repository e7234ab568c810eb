"""Helpers for tests that mount through FUSE (lklfuse): mount, wait, unmount, run as nobody."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

NOBODY = 65534


def lklfuse_cmd(python: str = sys.executable) -> list[str]:
    return [python, "-m", "fstools.lklfuse"]


def is_mounted(mnt: Path) -> bool:
    """From the mount table: stat() of another user's FUSE mount fails even for root."""
    target = os.path.realpath(mnt).encode()
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace(b"\\040", b" ") == target:
                return True
    return False


def wait_mounted(mnt: Path, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if is_mounted(mnt):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"lklfuse exited with {proc.returncode}: "
                                 f"{proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError(f"{mnt} was not mounted within {timeout} s")


def wait_unmounted(mnt: Path, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not is_mounted(mnt):
            return
        time.sleep(0.05)
    raise AssertionError(f"{mnt} still mounted after {timeout} s")


def unmount(mnt: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


class Mount:
    """``lklfuse IMAGE MNT`` (daemonized, as users run it); unmounted at the end."""

    def __init__(self, image: Path, mnt: Path, *options: str, user: list[str] | None = None,
                 python: str = sys.executable, env: dict[str, str] | None = None) -> None:
        self.image, self.mnt, self.options = image, mnt, options
        self.user = user or []
        self.python = python
        self.env = env
        self.result: subprocess.CompletedProcess | None = None

    def __enter__(self) -> Path:
        self.mnt.mkdir(exist_ok=True)
        cmd = self.user + lklfuse_cmd(self.python) + [str(self.image), str(self.mnt)]
        for o in self.options:
            cmd += ["-o", o]
        self.result = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60)
        assert self.result.returncode == 0, self.result.stderr
        wait_mounted(self.mnt)
        return self.mnt

    def __exit__(self, *exc: object) -> None:
        r = subprocess.run(self.user + ["fusermount3", "-u", str(self.mnt)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            unmount(self.mnt)
        wait_unmounted(self.mnt)


def as_nobody() -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
