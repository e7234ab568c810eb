"""Shared fixtures. In CI (CI=true) a skipped test fails the run: every test must run."""

from __future__ import annotations

import pytest
from helpers import IN_CI

_skipped: list[str] = []



def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) were skipped; in CI every test must run:")
        for nodeid in _skipped[:50]:
            print("  ", nodeid)
        session.exitstatus = 1


@pytest.fixture
def kernel():
    from kernel import Kernel

    k = Kernel(mb=32)
    try:
        yield k
    finally:
        k.halt()
