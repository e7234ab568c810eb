"""The one rule of the architecture, checked on every module's imports.

* front ends (fstools) reach the kernel only through the façade package
  ``kernel`` (Kernel, kernel.sys, constants, errors): never its inner modules;
* the kernel imports no front end and none of trio, pyfuse3, click, libarchive;
* a filesystem driver imports no other driver.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

FORBIDDEN_IN_KERNEL = ("fstools", "trio", "pyfuse3", "click", "libarchive")
DRIVERS = ("ext4", "btrfs", "xfs", "ramfs")


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    if rel.name == "__init__":
        package = list(rel.parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            # "from kernel import vfs" names a submodule too
            for a in node.names:
                out.append(f"{mod}.{a.name}")
    return out


def _modules(top: str) -> list[Path]:
    return sorted((ROOT / top).rglob("*.py"))


def test_front_ends_use_only_the_facade() -> None:
    import kernel

    facade = set(dir(kernel))
    bad = []
    for path in _modules("fstools"):
        for mod in _imports(path):
            if mod == "kernel" or not mod.startswith("kernel."):
                continue
            name = mod.split(".", 1)[1]
            if "." in name or name not in facade or name in ("vfs", "fs", "block", "syscalls",
                                                              "mm", "lib"):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_kernel_imports_no_front_end_or_async_library() -> None:
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _modules("kernel") for m in _imports(p)
           if m.split(".")[0] in FORBIDDEN_IN_KERNEL]
    assert not bad, "\n".join(bad)


def test_drivers_do_not_import_each_other() -> None:
    bad = []
    for drv in DRIVERS:
        base = ROOT / "kernel" / "fs" / drv
        paths = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        for path in paths:
            if not path.exists():
                continue
            for mod in _imports(path):
                for other in DRIVERS:
                    if other != drv and mod.startswith(f"kernel.fs.{other}"):
                        bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """The import parser resolves relative imports (so the checks above can fail)."""
    sample = ROOT / "fstools" / "fs2tar" / "export.py"
    mods = _imports(sample)
    assert "kernel" in mods
    assert any(m.startswith("fstools.fs2tar.archive") for m in mods)
