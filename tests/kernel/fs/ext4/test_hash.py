"""Directory hashes: ours against debugfs's, and many names at once against one at a time."""

from __future__ import annotations

import random
import re
import struct
import subprocess
import uuid
from pathlib import Path

from helpers import run

from kernel.fs.ext4.hash import LANES, dx_hash, dx_hash_many

SEED = "12345678-9abc-4def-8123-456789abcdef"
# debugfs names the signed hashes only (its "_unsigned" names fall back to legacy)
DEBUGFS = {0: "legacy", 1: "half_md4", 2: "tea"}


def _names(rnd: random.Random, n: int) -> list[bytes]:
    """Names of every length class a hash pass treats apart (short words, exactly 32 bytes,
    several 32-byte chunks), ASCII and bytes of 128 and more (negative chars)."""
    alphabet = [c for c in range(33, 256) if c not in b"/\\\"'#;" and c != 127]
    out = set()
    while len(out) < n:
        length = rnd.choice([1, 2, 3, 4, 5, 7, 8, 31, 32, 33, 63, 64, 65, 100, 255])
        high = rnd.random() < 0.3
        out.add(bytes(rnd.choice(alphabet) if high else rnd.randrange(48, 123)
                      for _ in range(length)))
    return sorted(out)


def test_hashes_are_debugfs_hashes(tmp_path: Path) -> None:
    image = tmp_path / "h.img"
    run("mkfs.ext4", "-q", "-F", image, "4M")
    names = _names(random.Random(7), 120)
    seed = struct.unpack("<4I", uuid.UUID(SEED).bytes)
    cmds = tmp_path / "cmds"
    cmds.write_bytes(b"".join(b"dx_hash -h %s -s %s %s\n" % (alg.encode(), SEED.encode(), name)
                              for alg in DEBUGFS.values() for name in names))
    out = subprocess.run(["debugfs", "-f", str(cmds), str(image)], capture_output=True,
                         check=True).stdout
    got = [(int(a, 16), int(b, 16))
           for a, b in re.findall(rb"is (0x[0-9a-f]+) \(minor (0x[0-9a-f]+)\)", out)]
    assert len(got) == len(DEBUGFS) * len(names)
    want = [h for version in DEBUGFS for h in dx_hash_many(names, version, seed)]
    assert want == got


def test_many_names_hash_as_one_at_a_time() -> None:
    rnd = random.Random(3)
    for count in (4, 5, 17, LANES, LANES + 3, 3 * LANES):
        names = _names(rnd, count)
        for seed in (None, tuple(rnd.getrandbits(32) for _ in range(4))):
            for version in range(6):
                alone = [dx_hash.__wrapped__(n, version, seed) for n in names]
                assert dx_hash_many(names, version, seed) == alone, (count, version)
