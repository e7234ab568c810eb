"""The benchmark datasets and the images made of them.

* ``tree``: about 45,000 files copied from the host's /usr/share (5,000 with
  --quick), with their modes, times, symlinks and hard links;
* ``big``: one file of random bytes, 1 GiB (64 MiB with --quick);
* ``debian``: a debootstrap'ed root (device nodes, hard links) when
  debootstrap is installed and we are root;
* ``one``: a single small file, for start-up time.

Each dataset becomes an ext4, btrfs and xfs image by the real mkfs tools
(``mkfs.ext4 -d``, ``mkfs.btrfs --rootdir``, ``mkfs.xfs`` + a loop mount and
``cp -a`` as root). Everything is cached in the work directory keyed by the
dataset's parameters, so a second run starts measuring at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ENV = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def sh(*cmd: str | os.PathLike[str], check: bool = True, quiet: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([os.fspath(c) for c in cmd], check=check, env=ENV,
                          stdout=subprocess.DEVNULL if quiet else None,
                          stderr=subprocess.PIPE, text=True)


def is_root() -> bool:
    return os.geteuid() == 0


def tree_size(root: Path) -> tuple[int, int]:
    files = 0
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        files += len(filenames) + len(dirnames)
        for n in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return files, total


class Datasets:
    def __init__(self, work: Path, quick: bool = False) -> None:
        self.work = work
        self.quick = quick
        self.tag = "quick" if quick else "full"
        self.max_files = 5_000 if quick else 45_000
        self.big_size = (64 << 20) if quick else (1 << 30)
        self.trees: dict[str, Path] = {}
        self.images: dict[tuple[str, str], Path] = {}
        self.notes: list[str] = []

    # -- source trees ----------------------------------------------------------------
    def _copy_share(self, dest: Path) -> None:
        """The first max_files entries of /usr/share in sorted walk order, as cp -a keeps them."""
        src = Path("/usr/share")
        count = 0
        dest.mkdir(parents=True)
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel = Path(dirpath).relative_to(src)
            target = dest / rel
            target.mkdir(exist_ok=True)
            for name in sorted(filenames):
                if count >= self.max_files:
                    return
                s = Path(dirpath) / name
                try:
                    if s.is_symlink():
                        os.symlink(os.readlink(s), target / name)
                    elif s.is_file():
                        shutil.copy2(s, target / name)
                    else:
                        continue
                except OSError:
                    continue
                count += 1

    def prepare(self, filesystems: list[str]) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        tree = self.work / f"tree-{self.tag}"
        if not tree.exists():
            print(f"making the {self.max_files}-file tree from /usr/share ...", flush=True)
            tmp = tree.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            self._copy_share(tmp)
            tmp.rename(tree)
        self.trees["tree"] = tree
        big = self.work / f"big-{self.tag}"
        if not big.exists():
            print(f"making a {self.big_size >> 20} MiB random file ...", flush=True)
            tmp = big.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            with open(tmp / "random.bin", "wb") as f:
                left = self.big_size
                while left:
                    n = min(left, 64 << 20)
                    f.write(os.urandom(n))
                    left -= n
            tmp.rename(big)
        self.trees["big"] = big
        one = self.work / "one"
        if not one.exists():
            one.mkdir()
            (one / "hello.txt").write_text("hello\n")
        self.trees["one"] = one
        deb = self.work / "debian"
        if deb.exists():
            self.trees["debian"] = deb
        elif shutil.which("debootstrap") and is_root():
            print("debootstrap of a minimal Debian root ...", flush=True)
            r = sh("debootstrap", "--variant=minbase", "bookworm", deb, check=False)
            if r.returncode == 0:
                self.trees["debian"] = deb
            else:
                shutil.rmtree(deb, ignore_errors=True)
                self.notes.append("debootstrap failed: no Debian dataset")
        else:
            self.notes.append("no debootstrap (or not root): no Debian dataset")
        for name, src in self.trees.items():
            for fs in filesystems:
                img = self.make_image(fs, name, src)
                if img is not None:
                    self.images[(fs, name)] = img

    # -- images ------------------------------------------------------------------------------
    def _size_for(self, src: Path) -> int:
        _files, total = tree_size(src)
        return max(400 << 20, int(total * 1.6) + (200 << 20))

    def make_image(self, fs: str, name: str, src: Path) -> Path | None:
        img = self.work / f"{name}-{self.tag if name != 'one' else 'x'}.{fs}.img"
        if img.exists():
            return img
        size = self._size_for(src)
        tmp = img.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.truncate(size)
        print(f"mkfs.{fs} for {name} ({size >> 20} MiB) ...", flush=True)
        if fs == "ext4":
            sh("mkfs.ext4", "-q", "-F", "-d", src, tmp)
        elif fs == "btrfs":
            sh("mkfs.btrfs", "-q", "-f", "--rootdir", src, tmp)
        elif fs == "xfs":
            if not is_root():
                self.notes.append("xfs images need root (loop mount to populate)")
                tmp.unlink()
                return None
            sh("mkfs.xfs", "-q", "-f", tmp)
            mnt = self.work / "mnt"
            mnt.mkdir(exist_ok=True)
            sh("mount", "-o", "loop", tmp, mnt)
            try:
                sh("cp", "-a", f"{src}/.", mnt)
            finally:
                sh("umount", mnt)
        else:
            raise ValueError(fs)
        tmp.rename(img)
        return img

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, path in self.trees.items():
            files, total = tree_size(path)
            out[name] = {"entries": files, "bytes": total}
        out["notes"] = self.notes
        return out
