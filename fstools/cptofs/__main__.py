"""cptofs and cpfromfs entry points (not yet available)."""

from __future__ import annotations

import sys


def cptofs_main() -> None:
    print("cptofs: not yet available", file=sys.stderr)
    sys.exit(1)


def cpfromfs_main() -> None:
    print("cpfromfs: not yet available", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    cpfromfs_main() if "cpfromfs" in sys.argv[0] else cptofs_main()
