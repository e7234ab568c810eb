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
          "xfs-v4.img", "xfs-v5.img", "btrfs-basic.img", "btrfs-mixed.img", "btrfs-xxhash.img"]


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
