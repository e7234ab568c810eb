"""Filesystem drivers, registered in the order ``mount`` without a type tries them."""

from __future__ import annotations

from ..vfs.super import Registry


def register_all(registry: Registry) -> None:
    from .ramfs import RamfsType

    registry.register(RamfsType())
