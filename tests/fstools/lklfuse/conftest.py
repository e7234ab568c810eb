"""Fixtures for lklfuse: real FUSE mounts, as root and as an unprivileged user."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fusehelpers import unmount
from helpers import ROOT, need_root


@pytest.fixture(autouse=True)
def _never_leave_mounts(tmp_path: Path) -> Iterator[None]:
    yield
    for p in list(tmp_path.rglob("*")) if tmp_path.exists() else []:
        try:
            if p.is_dir() and os.path.ismount(p):
                unmount(p)
        except OSError:
            pass


@pytest.fixture(scope="session")
def user_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A Python environment user ``nobody`` can run lklfuse from.

    The project's own environment may live where other users cannot enter
    (under /root in CI), so its site-packages and the source tree are copied
    to a world-readable place and a fresh venv of the same base interpreter
    points at them. /dev/fuse is made 0666, as distributions ship it, for the
    session.
    """
    need_root()
    base = Path(os.environ.get("LKL_USER_ENV", "/var/tmp")) / f"lklfuse-user-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    os.chmod(base, 0o755)
    src = base / "src"
    src.mkdir()
    for pkg in ("kernel", "fstools"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    sitepkgs = base / "site"
    shutil.copytree(site.getsitepackages()[0], sitepkgs, symlinks=True,
                    ignore=shutil.ignore_patterns("__editable__*", "__pycache__"))
    venv = base / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = next((venv / "lib").glob("python3*/site-packages"))
    (target / "lkl.pth").write_text(f"{src}\n{sitepkgs}\n")
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    fuse_mode = os.stat("/dev/fuse").st_mode & 0o777
    os.chmod("/dev/fuse", 0o666)
    try:
        yield {"python": str(venv / "bin" / "python"), "base": base}
    finally:
        os.chmod("/dev/fuse", fuse_mode)
        shutil.rmtree(base, ignore_errors=True)


