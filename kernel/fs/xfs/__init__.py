"""XFS, read-only: every V4 and V5 format mkfs.xfs and Linux produce, with log replay.

The format lives in ``ondisk``; the modules follow Linux's libxfs names
(``sb``, ``bmap``, ``da_btree``, ``dir2_*``, ``attr_*``, ``symlink``,
``log_recover``) and the mount in ``super``.
"""

from __future__ import annotations

from .super import XfsType


def register(registry: object) -> None:
    registry.register(XfsType())  # type: ignore[attr-defined]
