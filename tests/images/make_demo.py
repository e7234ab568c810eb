#!/usr/bin/env python3
"""Make the sample image ``make demo`` exports: a small ext4 root filesystem.

    .venv/bin/python tests/images/make_demo.py      (as root, for the device nodes)

The tree is generated here (a few /etc files, a hostname, a symlink, a hard
link, a file with a hole, extended attributes, an ACL, a fifo and a device
node) and copied in by the real ``mkfs.ext4 -d``. Output:
``demo-ext4.img.zst``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP = 1_700_000_000  # fixed times: the image is the same every time it is made


def build_tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("lkl-demo\n")
    (root / "etc/os-release").write_text('NAME="Demo Linux"\nVERSION_ID="1"\n')
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "user:x:1000:1000:user:/home/user:/bin/sh\n")
    (root / "etc/motd").write_text("Exported without root and without a VM.\n")
    os.symlink("/etc/os-release", root / "etc/issue")
    (root / "home/user").mkdir(parents=True)
    notes = root / "home/user/notes.txt"
    notes.write_text("ext4 -> fs2tar -> tar, losing nothing.\n")
    os.setxattr(notes, "user.comment", b"kept by fs2tar")
    os.link(notes, root / "home/user/notes-hardlink.txt")
    with open(root / "home/user/sparse.bin", "wb") as f:
        f.truncate(16 << 20)
        f.seek(8 << 20)
        f.write(b"data in the middle of a hole\n")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "dev").mkdir()
    if os.geteuid() == 0:
        os.mknod(root / "dev/null", 0o20666, os.makedev(1, 3))
        os.mkfifo(root / "dev/initctl", 0o600)
        os.chown(root / "home/user", 1000, 1000)
        os.chown(notes, 1000, 1000)
    subprocess.run(["setfacl", "-m", "u:1000:rwx", os.fspath(root / "tmp")], check=False)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (STAMP, STAMP), follow_symlinks=False)
    os.utime(root, (STAMP, STAMP))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        build_tree(tree)
        img = Path(tmp) / "demo-ext4.img"
        env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin",
                   E2FSPROGS_FAKE_TIME=str(STAMP))
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "demo", "-U",
                        "6b1d7c26-3a70-4f5e-9d33-2c2f0f4a1d11", "-E", "hash_seed="
                        "0e5b7ad0-5b1c-4d7e-8d0f-6a0c6a2f2a11", "-d", os.fspath(tree),
                        os.fspath(img), "32M"], check=True, env=env)
        out = HERE / "demo-ext4.img.zst"
        subprocess.run(["zstd", "-q", "-19", "-f", os.fspath(img), "-o", os.fspath(out)],
                       check=True)
        shutil.rmtree(tree)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
