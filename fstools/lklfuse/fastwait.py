"""pyfuse3's session loop without a trip through trio's scheduler per request.

pyfuse3 reads each request after ``async with read_lock`` and
``await trio.lowlevel.wait_readable(fuse_fd)``: a trio.Lock that checkpoints
even when free, and an epoll registration, an epoll_wait and a reschedule
for every request, which cost more than many of the requests themselves
(a lookup, a getattr, an open of a cached file). pyfuse3 looks trio up
through its module attribute ``pyfuse3.trio`` (its asyncio mode replaces it
the same way), so ``install`` gives it a stand-in that changes two things:

* ``Lock``: taken without a checkpoint when it is free (lklfuse runs one
  reader task, so it always is), otherwise waited for as trio.Lock.
* ``lowlevel.wait_readable`` of the FUSE descriptor: a poll(2) of at most
  ``GRACE`` seconds waits for the next request first (it usually follows
  our reply within microseconds) and returns without the scheduler; after
  ``STREAK`` such returns in a row, or when nothing came in time, the wait
  is trio's, a checkpoint, so the loop's other tasks (signals, writeback)
  wait for at most that many requests or that long.

Everything else is trio's own.
"""

from __future__ import annotations

import select
import types
from typing import Any

import trio

GRACE = 0.001  # seconds the next request may take and still skip the scheduler
STREAK = 64  # requests served that way before trio's wait is taken once


class _FreeLock:
    """trio.Lock, taken without a checkpoint when nobody holds it."""

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class _Waiter:
    """wait_readable for pyfuse3, whose one descriptor is its session's."""

    def __init__(self) -> None:
        self.fd = -1
        self._poll = select.poll()
        self._streak = 0
        self.fast = 0  # requests that skipped the scheduler, for tests and statistics

    async def wait_readable(self, fd: Any) -> None:
        if fd != self.fd:
            if self.fd >= 0:
                self._poll.unregister(self.fd)
            self._poll.register(fd, select.POLLIN)
            self.fd = fd
        if self._streak < STREAK and self._poll.poll(GRACE * 1000):
            self._streak += 1
            self.fast += 1
            return
        self._streak = 0
        await trio.lowlevel.wait_readable(fd)


class _Namespace(types.SimpleNamespace):
    """A module's stand-in: what is set here, then the module's own attributes."""

    def __init__(self, module: types.ModuleType, **own: Any) -> None:
        super().__init__(**own)
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def install(pyfuse3: types.ModuleType) -> _Waiter:
    """Give ``pyfuse3`` the stand-in for trio; before ``pyfuse3.init``, which makes the
    read lock."""
    waiter = _Waiter()
    lowlevel = _Namespace(trio.lowlevel, wait_readable=waiter.wait_readable)
    pyfuse3.trio = _Namespace(trio, Lock=_FreeLock, lowlevel=lowlevel)  # type: ignore[attr-defined]
    return waiter
