"""The kernel's hot paths compiled with mypyc, used when built and current.

Copying a tree of small files into an image runs some 1,500 lines of Python per file
(syscall layer, VFS, ext4 inode, directory, allocator and extent code, the block layer),
none of it dominant. mypyc compiles those modules, unchanged, to C extensions that run
the same code with native calls and attribute access. They are an option, never a
requirement: the Python modules stay the reference and are what runs when there is no
build, when it was made for another Python, when any compiled source changed since it
was built (checked by digest at start-up), or with ``LKL_NATIVE=0``.

``python -m kernel.nativebuild`` compiles ``MODULES`` into ``kernel/_native/`` (needs
mypy and a C compiler; ``make`` runs it). ``activate``, run first thing by ``import
kernel``, installs an import finder that loads those modules from the build.
``LKL_NATIVE``: ``0`` never uses the build, ``require`` fails when it cannot be used
(the test suite's native run), anything else uses it when it is current.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# Compiled together, as one group: calls between them are native. A class compiled here
# cannot be subclassed by a module that is not, and compiled code checks the declared
# types of arguments and attributes (mypy's view must be the whole truth).
MODULES = (
    "kernel.block.blkdev",
    "kernel.block.buffer",
    "kernel.block.overlay",
    "kernel.block.virtio.blk",
    "kernel.fs.ext4.alloc",
    "kernel.fs.ext4.csum",
    "kernel.fs.ext4.dir",
    "kernel.fs.ext4.dirwrite",
    "kernel.fs.ext4.extents",
    "kernel.fs.ext4.file",
    "kernel.fs.ext4.hash",
    "kernel.fs.ext4.jbd2.commit",
    "kernel.fs.ext4.ondisk",
    "kernel.fs.ext4.super",
    "kernel.fs.ext4.write",
)

PACKAGE_DIR = Path(__file__).resolve().parent      # kernel/
ROOT = PACKAGE_DIR.parent                          # where ``kernel`` is importable from
NATIVE_DIR = PACKAGE_DIR / "_native"
MANIFEST = "manifest.json"

_active: dict[str, Path] = {}
_why_not = "not activated"


class NativeUnavailable(ImportError):
    """LKL_NATIVE=require and the build cannot be used."""


def source_path(name: str) -> Path:
    """The source file of module or package ``name`` (which may not exist)."""
    path = ROOT.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def digest(sources: Sequence[str]) -> str:
    """The digest of these source files (paths relative to ``ROOT``), as they are now;
    "" if one is missing."""
    h = hashlib.sha256()
    for rel in sources:
        h.update(rel.encode() + b"\0")
        try:
            h.update((ROOT / rel).read_bytes())
        except OSError:
            return ""
    return h.hexdigest()


def abi() -> str:
    return f"{sys.implementation.cache_tag}-{sysconfig.get_config_var('SOABI')}"


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules (and their group's shared library) in the build."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        where = self.paths.get(fullname)
        if where is None:
            return None
        return importlib.util.spec_from_file_location(fullname, where)


def usable(native_dir: Path) -> dict[str, Path] | str:
    """The build's extension of each module, or why it cannot be used."""
    try:
        manifest = json.loads((native_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no build in {native_dir} (python -m kernel.nativebuild)"
    except (OSError, ValueError) as e:
        return f"{native_dir / MANIFEST}: unreadable ({e})"
    if manifest.get("abi") != abi():
        return f"built for {manifest.get('abi')}, this is {abi()}"
    if tuple(manifest.get("modules", {})) != MODULES:
        return "built from another list of modules"
    # the compiled modules and every kernel module they import: the build bakes in what
    # mypy saw of those (constants, signatures, classes)
    sources = manifest.get("sources", [])
    if not isinstance(sources, list) or manifest.get("digest") != digest(sources):
        return "the sources changed since the build (python -m kernel.nativebuild)"
    paths = {name: native_dir / rel for name, rel in manifest["modules"].items()}
    paths[manifest["group"]] = native_dir / manifest["group_file"]
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        return f"missing {missing[0]}"
    return paths


def activate(native_dir: Path = NATIVE_DIR) -> bool:
    """Load ``MODULES`` from the build from now on, if it is current; True if so."""
    global _why_not
    mode = os.environ.get("LKL_NATIVE", "")
    if mode == "0":
        _why_not = "LKL_NATIVE=0"
        return False
    if _active:
        return True
    loaded = [m for m in MODULES if m in sys.modules]
    result = usable(native_dir) if not loaded else f"{loaded[0]} was imported before"
    if isinstance(result, str):
        _why_not = result
        if mode == "require":
            raise NativeUnavailable(f"LKL_NATIVE=require: compiled modules unusable: {result}")
        return False
    _active.update(result)
    sys.meta_path.insert(0, _Finder(result))
    return True


def status() -> str:
    """One line on what runs: the compiled modules or the Python ones, and why."""
    if _active and all(getattr(sys.modules.get(m), "__file__", "").endswith(
            tuple(importlib.machinery.EXTENSION_SUFFIXES)) for m in MODULES if m in sys.modules):
        return f"compiled ({len(MODULES)} modules, mypyc)"
    return f"Python ({_why_not})"


def is_active() -> bool:
    return bool(_active)
