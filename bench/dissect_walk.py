"""Walk an image with dissect.extfs/xfs/btrfs, reading every file (run in its own venv).

    python dissect_walk.py ext4|xfs|btrfs IMAGE

The peer reader's equivalent of exporting the tree: every directory listed,
every regular file read to the end, symlinks read.
"""

from __future__ import annotations

import stat
import sys


def _kind(node: object) -> int:
    ft = getattr(node, "filetype", None)
    if isinstance(ft, int):
        return stat.S_IFMT(ft)
    for check, kind in (("is_dir", stat.S_IFDIR), ("is_file", stat.S_IFREG),
                        ("is_symlink", stat.S_IFLNK)):
        f = getattr(node, check, None)
        if f is not None and f():
            return kind
    return 0


def main() -> None:
    fs, path = sys.argv[1], sys.argv[2]
    with open(path, "rb") as fh:
        if fs == "ext4":
            from dissect.extfs import ExtFS

            root = ExtFS(fh).root
        elif fs == "xfs":
            from dissect.xfs import XFS

            root = XFS(fh).root
        else:
            from dissect.btrfs import Btrfs

            root = Btrfs(fh).get("/")
        total = 0
        stack = [root]
        while stack:
            node = stack.pop()
            for child in node.iterdir():
                if isinstance(child, tuple):  # dissect.btrfs yields (name, inode)
                    name, child = child
                else:
                    name = getattr(child, "filename", None) or getattr(child, "name", "")
                if name in (".", ".."):
                    continue
                kind = _kind(child)
                if kind == stat.S_IFDIR:
                    stack.append(child)
                elif kind == stat.S_IFREG:
                    f = child.open()
                    while chunk := f.read(1 << 20):
                        total += len(chunk)
                elif kind == stat.S_IFLNK:
                    _ = child.link
    if not total:
        sys.exit("read no file data: the walk did not work")  # never time a walk that failed
    print(total)


if __name__ == "__main__":
    main()
