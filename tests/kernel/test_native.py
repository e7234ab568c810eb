"""The compiled kernel modules (kernel.native): used only when the build is current.

The whole suite runs once on the compiled modules and once on the Python ones (``make
test``); these tests check the switch itself, on a copy of the tree with its build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

import kernel.native as native

SNIPPET = ("import kernel, kernel.native as n, kernel.fs.ext4.alloc as a; "
           "print(n.status()); print(a.__file__)")


def _need_build() -> None:
    why = native.usable(native.NATIVE_DIR)
    if isinstance(why, str):
        pytest.skip(f"no usable compiled modules: {why} (make native)")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the kernel package with its build."""
    _need_build()
    shutil.copytree(ROOT / "kernel", tmp_path / "kernel",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _run(tree: Path, mode: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LKL_NATIVE"}
    if mode is not None:
        env["LKL_NATIVE"] = mode
    env["PYTHONPATH"] = str(tree)
    return subprocess.run([sys.executable, "-c", SNIPPET], cwd=tree, env=env,
                          capture_output=True, text=True)


def test_a_current_build_is_what_runs(tree: Path) -> None:
    out = _run(tree, None)
    assert out.returncode == 0, out.stderr
    status, where = out.stdout.splitlines()
    assert status == f"compiled ({len(native.MODULES)} modules, mypyc)"
    assert where.startswith(str(tree / "kernel" / "_native"))
    assert where.endswith(".so")


def test_lkl_native_0_runs_the_python_modules(tree: Path) -> None:
    out = _run(tree, "0")
    assert out.returncode == 0, out.stderr
    status, where = out.stdout.splitlines()
    assert status == "Python (LKL_NATIVE=0)"
    assert where == str(tree / "kernel" / "fs" / "ext4" / "alloc.py")


def test_a_changed_source_falls_back_to_python(tree: Path) -> None:
    """Edit one compiled module: its build no longer runs (it would run the old code)."""
    src = tree / "kernel" / "fs" / "ext4" / "hash.py"
    src.write_text(src.read_text() + "\n# edited\n")
    out = _run(tree, None)
    assert out.returncode == 0, out.stderr
    status, where = out.stdout.splitlines()
    assert status.startswith("Python (the sources changed since the build")
    assert where.endswith("alloc.py")
    required = _run(tree, "require")
    assert required.returncode != 0
    assert "LKL_NATIVE=require: compiled modules unusable: the sources changed" in required.stderr


def test_a_build_for_another_python_is_not_loaded(tree: Path) -> None:
    manifest = tree / "kernel" / "_native" / native.MANIFEST
    data = json.loads(manifest.read_text())
    data["abi"] = "cpython-39-x86_64-linux-gnu"
    manifest.write_text(json.dumps(data))
    out = _run(tree, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == (
        f"Python (built for cpython-39-x86_64-linux-gnu, this is {native.abi()})")


def test_no_build_runs_the_python_modules(tree: Path) -> None:
    shutil.rmtree(tree / "kernel" / "_native")
    out = _run(tree, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("Python (no build in ")
