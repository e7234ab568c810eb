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

While requests come in a burst (the last one followed its reply within ``GRACE``),
the wait first polls the descriptor without sleeping for up to ``SPIN`` seconds, when
the process may run on more than one CPU. A request then finds the server awake: on a
virtual machine that halts idle CPUs (guest_halt_poll_ns=0, as here), waking a process
on the other CPU costs about 40 us, half of a FUSE round trip (a getxattr took 89 us,
48 us with the spin; cp -a of a 5,000-file tree into a mount 4.6 s, 2.75 s). A burst's
end costs one spin; a lone request none.

Everything else is trio's own.
"""

from __future__ import annotations

import os
import select
import time
import types
from typing import Any

import trio

GRACE = 0.001  # seconds the next request may take and still skip the scheduler
STREAK = 64  # requests served that way before trio's wait is taken once
SPIN = 0.0002  # seconds of polling without sleeping, inside a burst of requests


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

    def __init__(self, spin: float | None = None) -> None:
        self.fd = -1
        self._poll = select.poll()
        self._streak = 0
        self._burst = False  # the last request came within GRACE of the wait for it
        # spinning pays only when the requester can run on another CPU meanwhile
        self.spin = (SPIN if len(os.sched_getaffinity(0)) > 1 else 0.0) if spin is None else spin
        self.fast = 0  # requests that skipped the scheduler, for tests and statistics
        self.spun = 0  # of those, requests found while polling without sleeping

    async def wait_readable(self, fd: Any) -> None:
        if fd != self.fd:
            if self.fd >= 0:
                self._poll.unregister(self.fd)
            self._poll.register(fd, select.POLLIN)
            self.fd = fd
        if self._streak < STREAK:
            if self._burst and self.spin and self._spin():
                self.spun += 1
            elif self._poll.poll(GRACE * 1000):
                self._burst = True
            else:
                self._burst = False
                self._streak = 0
                await trio.lowlevel.wait_readable(fd)
                return
            self._streak += 1
            self.fast += 1
            return
        self._streak = 0
        await trio.lowlevel.wait_readable(fd)

    def _spin(self) -> bool:
        """Poll without sleeping for up to ``spin`` seconds: whether a request came."""
        poll = self._poll.poll
        end = time.perf_counter() + self.spin
        while True:
            if poll(0):
                return True
            if time.perf_counter() >= end:
                return False


class _Namespace(types.SimpleNamespace):
    """A module's stand-in: what is set here, then the module's own attributes."""

    def __init__(self, module: types.ModuleType, **own: Any) -> None:
        super().__init__(**own)
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def install(pyfuse3: types.ModuleType, spin: float | None = None) -> _Waiter:
    """Give ``pyfuse3`` the stand-in for trio; before ``pyfuse3.init``, which makes the
    read lock. ``spin``: seconds to poll inside a burst (default ``SPIN``, none on one
    CPU)."""
    waiter = _Waiter(spin)
    lowlevel = _Namespace(trio.lowlevel, wait_readable=waiter.wait_readable)
    pyfuse3.trio = _Namespace(trio, Lock=_FreeLock, lowlevel=lowlevel)  # type: ignore[attr-defined]
    return waiter
