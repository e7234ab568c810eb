"""Filesystem drivers, registered in the order ``mount`` without a type tries them.

Each driver package provides ``register(registry)``. A driver that is not
part of this build (its package is absent) is left out, as a kernel built
without it would be.
"""

from __future__ import annotations

import importlib

from ..vfs.super import Registry

DRIVERS = ("ramfs", "ext4", "btrfs", "xfs")


def register_all(registry: Registry) -> None:
    for name in DRIVERS:
        modname = f"{__name__}.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        register = getattr(mod, "register", None)
        if register is not None:  # a package without it is a driver still being written
            register(registry)
