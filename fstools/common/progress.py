"""A one-line progress display on a terminal (stderr), silent otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Progress:
    """Files and bytes done, against estimates (from statfs), redrawn at most 10 times a second."""

    def __init__(self, total_bytes: int = 0, total_files: int = 0, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = self.stream.isatty()
        self.enabled = enabled
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, files: int, nbytes: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-6)
        rate = nbytes / elapsed
        parts = [f"{files:,} files"]
        if self.total_files:
            parts[0] += f" of ~{self.total_files:,}"
        parts.append(_human(nbytes) + (f" of ~{_human(self.total_bytes)}" if self.total_bytes else ""))
        parts.append(f"{_human(rate)}/s")
        if self.total_bytes and rate > 0 and nbytes < self.total_bytes:
            left = (self.total_bytes - nbytes) / rate
            parts.append(f"ETA {int(left // 60)}:{int(left % 60):02d}")
        line = "  ".join(parts)
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
