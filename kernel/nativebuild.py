"""Build the compiled kernel modules: ``python -m kernel.nativebuild [-j N] [--check]``.

Compiles ``kernel.native.MODULES`` with mypyc (mypy and a C compiler needed) into
``kernel/_native/``, which ``kernel.native`` loads from when it is current.
"""

from __future__ import annotations

import ast
import importlib.machinery
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .native import MANIFEST, MODULES, NATIVE_DIR, ROOT, abi, digest, source_path, usable


def dependencies(modules: Sequence[str]) -> list[str]:
    """The source files of ``modules`` and of every kernel module they import, at any
    depth (also under TYPE_CHECKING: mypyc compiles against those types), relative to
    ``ROOT``, sorted."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = source_path(name)
        if name in seen or not path.is_file():
            continue  # (a name imported from a module, not a module)
        seen.add(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.split(".")[0] == "kernel":
                    todo.append(base)
                    todo.extend(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names if a.name.split(".")[0] == "kernel")
    # the packages on the way to each module run first, on every import
    for name in list(seen):
        parts = name.split(".")
        seen.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(str(source_path(name).relative_to(ROOT)) for name in seen)


def build(native_dir: Path = NATIVE_DIR, jobs: int | None = None) -> None:
    """Compile ``MODULES`` with mypyc into ``native_dir`` (replaced whole, at the end)."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    sources = dependencies(MODULES)
    source_digest = digest(sources)
    with tempfile.TemporaryDirectory(prefix="lkl-native-") as tmp:
        t = Path(tmp)
        stage = t / "lib"
        cwd = os.getcwd()
        os.chdir(ROOT)  # module names follow from paths relative to here
        try:
            exts = mypycify([str(source_path(m).relative_to(ROOT)) for m in MODULES],
                            opt_level="3", multi_file=True, target_dir=str(t / "c"))
            dist = Distribution({"name": "kernel-native", "ext_modules": exts})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib = str(stage)  # type: ignore[attr-defined]
            cmd.build_temp = str(t / "o")  # type: ignore[attr-defined]
            cmd.parallel = jobs or os.cpu_count() or 1  # type: ignore[attr-defined]
            cmd.ensure_finalized()
            cmd.run()
        finally:
            os.chdir(cwd)
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        modules = {}
        for name in MODULES:
            rel = Path(*name.split(".")).with_suffix("")
            rel = rel.with_name(rel.name + suffix)
            if not (stage / rel).is_file():
                raise RuntimeError(f"mypyc build made no {rel}")
            modules[name] = str(rel)
        groups = list(stage.glob(f"*__mypyc{suffix}"))
        if len(groups) != 1:
            raise RuntimeError(f"mypyc build: expected one group library, found {groups}")
        group_file = groups[0].name
        manifest = {"abi": abi(), "sources": sources, "digest": source_digest, "modules": modules,
                    "group": group_file[:-len(suffix)], "group_file": group_file}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        old = native_dir.with_name(native_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if native_dir.exists():
            native_dir.rename(old)
        shutil.copytree(stage, native_dir)
        shutil.rmtree(old, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m kernel.nativebuild",
                                 description="Build (or --check) the compiled kernel modules.")
    ap.add_argument("--check", action="store_true", help="only say if the build is usable")
    ap.add_argument("-j", "--jobs", type=int, default=None, help="parallel compiler jobs")
    args = ap.parse_args(argv)
    if not args.check:
        try:
            build(jobs=args.jobs)
        except Exception as e:  # noqa: BLE001 - one line, and the Python modules still work
            print(f"kernel.nativebuild: build failed: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(f"kernel.nativebuild: {len(MODULES)} modules compiled into {NATIVE_DIR}")
        return 0
    result = usable(NATIVE_DIR)
    print("usable" if not isinstance(result, str) else f"not usable: {result}")
    return 0 if not isinstance(result, str) else 1


if __name__ == "__main__":
    sys.exit(main())
