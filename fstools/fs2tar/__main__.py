"""fs2tar entry point (not yet available)."""

from __future__ import annotations

import sys


def main() -> None:
    print("fs2tar: not yet available", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
