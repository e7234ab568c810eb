"""Directory-index hashes (dx_hash): legacy, half_md4 and tea, signed and unsigned.

Written from the htree description in Documentation/filesystems/ext4
(directory hash tree): a name is packed into 32-bit words (``str2hashbuf``),
mixed with half-MD4 or TEA rounds seeded by ``s_hash_seed``, and the major
hash has its low bit cleared (the bit marks hash-collision continuation in
the index). Names are at most 255 bytes, so these loops are bounded.
"""

from __future__ import annotations

import errno
import functools
import struct

from ...errors import kerr
from .ondisk import (
    DX_HASH_HALF_MD4,
    DX_HASH_HALF_MD4_UNSIGNED,
    DX_HASH_LEGACY,
    DX_HASH_LEGACY_UNSIGNED,
    DX_HASH_TEA,
    DX_HASH_TEA_UNSIGNED,
)

M = 0xFFFFFFFF
EXT4_HTREE_EOF_32BIT = (1 << 31) - 1
EXT4_HTREE_EOF_64BIT = (1 << 63) - 1
_DEFAULT_SEED = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
K2 = 0o13240474631
K3 = 0o15666365641
DELTA = 0x9E3779B9

_HIGH = bytes(1 if c >= 128 else 0 for c in range(256))  # which bytes are negative chars
_WORDS = [struct.Struct(f">{n}I") for n in range(9)]
LANES = 128
_LANE_ONE = (1).to_bytes(8, "little")  # one 64-bit lane holding 1
_PADS = [bytes([n]) * 32 for n in range(32)]  # a short name's pad: its length in every byte


def _legacy(name: bytes, signed: bool) -> int:
    h0, h1 = 0x12A3FE2D, 0x37ABE8F9
    for c in name:
        if signed and c >= 128:
            c -= 256
        h = (h1 + (h0 ^ ((c * 7152373) & M))) & M
        if h & 0x80000000:
            h = (h - 0x7FFFFFFF) & M
        h1, h0 = h0, h
    return (h0 << 1) & M


def _str2hashbuf(msg: bytes, signed: bool, num: int) -> list[int]:
    """Pack up to ``num * 4`` bytes of ``msg`` into ``num`` words, padded with the length.

    Each word is its four bytes read big-endian (a signed char borrows from the
    byte before it); a short last word starts with the pad bytes; missing
    words are the pad (the length repeated in every byte).
    """
    n = len(msg)
    pad = (n | (n << 8)) & M
    pad = (pad | (pad << 16)) & M
    chunk = msg[:num * 4]
    full, rem = divmod(len(chunk), 4)
    words = list(_WORDS[full].unpack_from(chunk, 0))
    if signed:
        high = chunk.translate(_HIGH)
        if any(high):
            borrow = _WORDS[full].unpack_from(high, 0)
            words = [(w - (h << 8)) & M for w, h in zip(words, borrow)]
    if rem:
        tail = chunk[full * 4:]
        v = (pad << (8 * rem)) + int.from_bytes(tail, "big")
        if signed:
            v -= int.from_bytes(tail.translate(_HIGH), "big") << 8
        words.append(v & M)
    if len(words) < num:
        words.extend([pad] * (num - len(words)))
    return words


def _hashbuf32(msg: bytes) -> bytes:
    """The 32 bytes whose big-endian words are ``_str2hashbuf(msg, False, 8)``."""
    n = len(msg)
    if n >= 32:
        return msg[:32]
    pad = _PADS[n]
    full = n & ~3
    if n & 3:  # the short last word: pad bytes first, then the name's last bytes
        msg = msg[:full] + pad[:4 - (n & 3)] + msg[full:]
    return msg + pad[:32 - len(msg)]


def _half_md4(buf: list[int], x: list[int], M: int = M, K2: int = K2, K3: int = K3) -> None:  # noqa: N803
    """One half-MD4 transform of ``buf`` by the eight words ``x``.

    With the defaults, on 32-bit words. ``dx_hash_many`` runs it on many names at once:
    every value is then a row of 64-bit lanes, one name per lane, and ``M``, ``K2`` and
    ``K3`` are the mask and constants repeated in every lane; no sum reaches a lane's
    upper half, so lanes never carry into each other.
    """
    a, b, c, d = buf
    x0, x1, x2, x3, x4, x5, x6, x7 = x
    # round 1: F(x, y, z) = z ^ (x & (y ^ z)); only the low 32 bits matter until rol
    a = (a + (d ^ (b & (c ^ d))) + x0) & M
    a = ((a << 3) | (a >> 29)) & M
    d = (d + (c ^ (a & (b ^ c))) + x1) & M
    d = ((d << 7) | (d >> 25)) & M
    c = (c + (b ^ (d & (a ^ b))) + x2) & M
    c = ((c << 11) | (c >> 21)) & M
    b = (b + (a ^ (c & (d ^ a))) + x3) & M
    b = ((b << 19) | (b >> 13)) & M
    a = (a + (d ^ (b & (c ^ d))) + x4) & M
    a = ((a << 3) | (a >> 29)) & M
    d = (d + (c ^ (a & (b ^ c))) + x5) & M
    d = ((d << 7) | (d >> 25)) & M
    c = (c + (b ^ (d & (a ^ b))) + x6) & M
    c = ((c << 11) | (c >> 21)) & M
    b = (b + (a ^ (c & (d ^ a))) + x7) & M
    b = ((b << 19) | (b >> 13)) & M
    # round 2: G(x, y, z) = (x & y) + ((x ^ y) & z)
    a = (a + (b & c) + ((b ^ c) & d) + x1 + K2) & M
    a = ((a << 3) | (a >> 29)) & M
    d = (d + (a & b) + ((a ^ b) & c) + x3 + K2) & M
    d = ((d << 5) | (d >> 27)) & M
    c = (c + (d & a) + ((d ^ a) & b) + x5 + K2) & M
    c = ((c << 9) | (c >> 23)) & M
    b = (b + (c & d) + ((c ^ d) & a) + x7 + K2) & M
    b = ((b << 13) | (b >> 19)) & M
    a = (a + (b & c) + ((b ^ c) & d) + x0 + K2) & M
    a = ((a << 3) | (a >> 29)) & M
    d = (d + (a & b) + ((a ^ b) & c) + x2 + K2) & M
    d = ((d << 5) | (d >> 27)) & M
    c = (c + (d & a) + ((d ^ a) & b) + x4 + K2) & M
    c = ((c << 9) | (c >> 23)) & M
    b = (b + (c & d) + ((c ^ d) & a) + x6 + K2) & M
    b = ((b << 13) | (b >> 19)) & M
    # round 3: H(x, y, z) = x ^ y ^ z
    a = (a + (b ^ c ^ d) + x3 + K3) & M
    a = ((a << 3) | (a >> 29)) & M
    d = (d + (a ^ b ^ c) + x7 + K3) & M
    d = ((d << 9) | (d >> 23)) & M
    c = (c + (d ^ a ^ b) + x2 + K3) & M
    c = ((c << 11) | (c >> 21)) & M
    b = (b + (c ^ d ^ a) + x6 + K3) & M
    b = ((b << 15) | (b >> 17)) & M
    a = (a + (b ^ c ^ d) + x1 + K3) & M
    a = ((a << 3) | (a >> 29)) & M
    d = (d + (a ^ b ^ c) + x5 + K3) & M
    d = ((d << 9) | (d >> 23)) & M
    c = (c + (d ^ a ^ b) + x0 + K3) & M
    c = ((c << 11) | (c >> 21)) & M
    b = (b + (c ^ d ^ a) + x4 + K3) & M
    b = ((b << 15) | (b >> 17)) & M
    buf[0] = (buf[0] + a) & M
    buf[1] = (buf[1] + b) & M
    buf[2] = (buf[2] + c) & M
    buf[3] = (buf[3] + d) & M


_SUMS = tuple((DELTA * (i + 1)) & M for i in range(16))


def _tea(buf: list[int], x: list[int]) -> None:
    b0, b1 = buf[0], buf[1]
    a, b, c, d = x[0], x[1], x[2], x[3]
    # the low 32 bits of + and ^ depend only on the operands' low 32 bits: mask once
    for s in _SUMS:
        b0 = (b0 + (((b1 << 4) + a) ^ (b1 + s) ^ ((b1 >> 5) + b))) & M
        b1 = (b1 + (((b0 << 4) + c) ^ (b0 + s) ^ ((b0 >> 5) + d))) & M
    buf[0] = (buf[0] + b0) & M
    buf[1] = (buf[1] + b1) & M


@functools.lru_cache(maxsize=8192)
def dx_hash(name: bytes, version: int, seed: tuple[int, int, int, int] | None) -> tuple[int, int]:
    """(major, minor) hash of ``name`` for hash ``version`` (0..5); EUCLEAN otherwise.

    ``seed`` is ``s_hash_seed`` as four words, or None when it is all zero.
    The unsigned variants (3, 4, 5) treat bytes as unsigned chars.
    """
    if version == DX_HASH_LEGACY or version == DX_HASH_LEGACY_UNSIGNED:
        major = _legacy(name, version == DX_HASH_LEGACY)
        minor = 0
    elif version == DX_HASH_HALF_MD4 or version == DX_HASH_HALF_MD4_UNSIGNED:
        signed = version == DX_HASH_HALF_MD4
        buf = list(seed or _DEFAULT_SEED)
        for pos in range(0, len(name), 32):
            _half_md4(buf, _str2hashbuf(name[pos:], signed, 8))
        major, minor = buf[1], buf[2]
    elif version == DX_HASH_TEA or version == DX_HASH_TEA_UNSIGNED:
        signed = version == DX_HASH_TEA
        buf = list(seed or _DEFAULT_SEED)
        for pos in range(0, len(name), 16):
            _tea(buf, _str2hashbuf(name[pos:], signed, 4))
        major, minor = buf[0], buf[1]
    else:
        raise kerr(errno.EUCLEAN, "ext4 htree", f"unknown directory hash version {version}")
    return _major(major), minor


def _major(h: int) -> int:
    """The major hash as the index keeps it: low bit clear (it marks a collision chain),
    and never the end-of-directory value."""
    h &= ~1 & M
    return (EXT4_HTREE_EOF_32BIT - 1) << 1 if h == EXT4_HTREE_EOF_32BIT << 1 else h


def dx_hash_many(names: list[bytes], version: int,
                 seed: tuple[int, int, int, int] | None) -> list[tuple[int, int]]:
    """``dx_hash`` of every name, the same values; half-MD4 hashes many names in one pass,
    each Python integer operation working on all of them (one 64-bit lane per name)."""
    if version not in (DX_HASH_HALF_MD4, DX_HASH_HALF_MD4_UNSIGNED) or len(names) < 4:
        return [dx_hash(n, version, seed) for n in names]
    signed = version == DX_HASH_HALF_MD4
    out: list[tuple[int, int]] = [(0, 0)] * len(names)
    by_chunks: dict[int, list[int]] = {}  # names needing the same number of transforms
    for i, n in enumerate(names):
        by_chunks.setdefault((len(n) + 31) // 32, []).append(i)
    s0, s1, s2, s3 = seed or _DEFAULT_SEED
    # at most LANES names a pass: longer integers cost more per name than they save
    for chunks, idx in [(c, ix[k:k + LANES]) for c, ix in by_chunks.items()
                        for k in range(0, len(ix), LANES)]:
        lanes = len(idx)
        rep = int.from_bytes(_LANE_ONE * lanes, "little")
        mask = M * rep
        pack = struct.Struct(f"<{lanes}Q")
        buf = [s0 * rep, s1 * rep, s2 * rep, s3 * rep]
        words = struct.Struct(f">{8 * lanes}I")
        for pos in range(0, chunks * 32, 32):
            flat = list(words.unpack(b"".join(_hashbuf32(names[i][pos:]) for i in idx)))
            if signed:  # a byte of 128 or more is a negative char: the slow packing
                for k, i in enumerate(idx):
                    if not names[i][pos:pos + 32].isascii():
                        flat[8 * k:8 * k + 8] = _str2hashbuf(names[i][pos:], True, 8)
            x = [int.from_bytes(pack.pack(*flat[w::8]), "little") for w in range(8)]
            _half_md4(buf, x, mask, K2 * rep, K3 * rep)
        majors = pack.unpack(buf[1].to_bytes(8 * lanes, "little"))
        minors = pack.unpack(buf[2].to_bytes(8 * lanes, "little"))
        for i, major, minor in zip(idx, majors, minors):
            out[i] = (_major(major), minor)
    return out


def hash2pos(major: int, minor: int) -> int:
    """The 64-bit readdir cookie of a hash (ext4's hash2pos)."""
    return ((major >> 1) << 32) | minor
