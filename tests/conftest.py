"""Shared fixtures. In CI (CI=true) a skipped test fails the run: every test must run.

The suite runs against the kernel's compiled modules when they are built and current
(``kernel.native``), else against the Python ones; ``make test`` runs it both ways
(LKL_NATIVE=require, then LKL_NATIVE=0). Tests marked ``python_modules`` patch functions
or classes of modules that may run compiled, where calls are bound when built: they run
in the Python pass only.
"""

from __future__ import annotations

import pytest
from helpers import IN_CI

_skipped: list[str] = []


def pytest_report_header(config: pytest.Config) -> str:
    import kernel.native

    return f"kernel modules: {kernel.native.status()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import kernel.native

    if not kernel.native.is_active():
        return
    keep, python_only = [], []
    for item in items:
        (python_only if item.get_closest_marker("python_modules") else keep).append(item)
    if python_only:
        config.hook.pytest_deselected(items=python_only)
        items[:] = keep


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
