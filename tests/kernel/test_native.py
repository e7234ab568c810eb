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


@pytest.mark.parametrize("edited", ["kernel/fs/ext4/hash.py", "kernel/uapi.py"],
                         ids=["compiled", "imported"])
def test_a_changed_source_falls_back_to_python(tree: Path, edited: str) -> None:
    """Edit a compiled module, or a module one imports (the build has its constants and
    types): the build no longer runs (it would run the old code)."""
    src = tree / edited
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


def test_the_build_covers_what_its_modules_import() -> None:
    from kernel.nativebuild import dependencies

    files = dependencies(["kernel.fs.ext4.write"])
    assert "kernel/fs/ext4/write.py" in files
    assert "kernel/uapi.py" in files              # from ...uapi import ...
    assert "kernel/vfs/inode.py" in files         # imported under TYPE_CHECKING
    assert "kernel/__init__.py" in files          # a package on the way
    assert "kernel/fs/btrfs/inode.py" not in files
    manifest = json.loads((native.NATIVE_DIR / native.MANIFEST).read_text()) \
        if (native.NATIVE_DIR / native.MANIFEST).is_file() else None
    if manifest is not None:
        assert manifest["sources"] == dependencies(native.MODULES)


def test_no_build_runs_the_python_modules(tree: Path) -> None:
    shutil.rmtree(tree / "kernel" / "_native")
    out = _run(tree, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("Python (no build in ")
