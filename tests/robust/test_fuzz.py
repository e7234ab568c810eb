"""Fuzzing the drivers: byte flips, overwritten words, zeroed blocks and truncation of small
real images of each filesystem; every walk must end cleanly or in OSErrors with a Linux
errno, within its time bound and memory limit, and never change the image.

FUZZ_SECONDS (per image, default 6) and FUZZ_EXAMPLES (default 200) run it longer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, sha256_file, unpack_image

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("FUZZ_SECONDS", "6"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
IMAGES = ["ext4-ext2.img", "ext4-ext3.img", "ext4-inline.img", "ext4-features.img",
          "xfs-v4.img", "xfs-v5.img", "btrfs-basic.img", "btrfs-mixed.img", "btrfs-xxhash.img",
          "btrfs-deep.img"]


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGES)
def test_fuzzed_images_fail_cleanly(tmp_path: Path, name: str) -> None:
    image = unpack_image(name, tmp_path)
    before = sha256_file(image)
    seed = int.from_bytes(name.encode()[:4], "little") ^ int(os.environ.get("FUZZ_SEED", "0"))
    proc = subprocess.run([sys.executable, str(HERE / "fuzzwalk.py"), str(image), str(seed),
                           str(EXAMPLES), str(SECONDS)], capture_output=True, text=True,
                          timeout=SECONDS + 120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["walks"] >= 3
    assert sha256_file(image) == before  # every mutation was undone: the walks wrote nothing


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ext4-ext3.img", "ext4-features.img"])
def test_writing_to_damaged_ext4_fails_cleanly(tmp_path: Path, name: str) -> None:
    """Damaged images mounted read-write: creating, writing, renaming, setting attributes
    and deleting either work or fail with an OSError, never anything else, never a hang."""
    import random
    import shutil
    import signal
    import time

    from fuzzwalk import UNIT, mutate, write_some

    src = unpack_image(name, tmp_path)
    size = src.stat().st_size
    data = src.read_bytes()
    units = [i for i in range(size // UNIT) if any(data[i * UNIT:(i + 1) * UNIT])]
    rnd = random.Random(hash(name) & 0xFFFF ^ int(os.environ.get("FUZZ_SEED", "0")))
    img = tmp_path / "w.img"
    deadline = time.monotonic() + SECONDS
    runs = 0

    def hang(*_a: object) -> None:
        raise TimeoutError("a write on a damaged image hung")

    old = signal.signal(signal.SIGALRM, hang)
    try:
        while time.monotonic() < deadline and runs < EXAMPLES:
            shutil.copyfile(src, img)
            with open(img, "r+b") as f:
                for off, new in mutate(rnd, units, size):
                    f.seek(off)
                    f.write(new)
            signal.alarm(30)
            try:
                write_some(str(img))
            except OSError:
                pass  # e.g. the unmount's write-back meeting the damage: a clean failure
            finally:
                signal.alarm(0)
            runs += 1
    finally:
        signal.signal(signal.SIGALRM, old)
    assert runs >= 3
