"""Directory-index hashes (dx_hash): legacy, half_md4 and tea, signed and unsigned.

Written from the htree description in Documentation/filesystems/ext4
(directory hash tree): a name is packed into 32-bit words (``str2hashbuf``),
mixed with half-MD4 or TEA rounds seeded by ``s_hash_seed``, and the major
hash has its low bit cleared (the bit marks hash-collision continuation in
the index). Names are at most 255 bytes, so these loops are bounded.
"""

from __future__ import annotations

import errno

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

# bytes -> values of "char": signed chars map 0x80..0xff to -128..-1
_SIGNED = tuple(c - 256 if c >= 128 else c for c in range(256))


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
    """Pack up to ``num * 4`` bytes of ``msg`` into ``num`` words, padded with the length."""
    n = len(msg)
    pad = (n | (n << 8)) & M
    pad = (pad | (pad << 16)) & M
    out: list[int] = []
    val = pad
    take = min(n, num * 4)
    for i in range(take):
        c = msg[i]
        if signed and c >= 128:
            c -= 256
        val = (c + (val << 8)) & M
        if i % 4 == 3:
            out.append(val)
            val = pad
    if len(out) < num:
        out.append(val)
    while len(out) < num:
        out.append(pad)
    return out


def _rol(x: int, s: int) -> int:
    return ((x << s) | (x >> (32 - s))) & M


def _half_md4(buf: list[int], x: list[int]) -> None:
    a, b, c, d = buf

    def F(x: int, y: int, z: int) -> int:
        return z ^ (x & (y ^ z))

    def G(x: int, y: int, z: int) -> int:
        return ((x & y) + ((x ^ y) & z)) & M

    # round 1
    a = _rol((a + F(b, c, d) + x[0]) & M, 3)
    d = _rol((d + F(a, b, c) + x[1]) & M, 7)
    c = _rol((c + F(d, a, b) + x[2]) & M, 11)
    b = _rol((b + F(c, d, a) + x[3]) & M, 19)
    a = _rol((a + F(b, c, d) + x[4]) & M, 3)
    d = _rol((d + F(a, b, c) + x[5]) & M, 7)
    c = _rol((c + F(d, a, b) + x[6]) & M, 11)
    b = _rol((b + F(c, d, a) + x[7]) & M, 19)
    # round 2
    a = _rol((a + G(b, c, d) + x[1] + K2) & M, 3)
    d = _rol((d + G(a, b, c) + x[3] + K2) & M, 5)
    c = _rol((c + G(d, a, b) + x[5] + K2) & M, 9)
    b = _rol((b + G(c, d, a) + x[7] + K2) & M, 13)
    a = _rol((a + G(b, c, d) + x[0] + K2) & M, 3)
    d = _rol((d + G(a, b, c) + x[2] + K2) & M, 5)
    c = _rol((c + G(d, a, b) + x[4] + K2) & M, 9)
    b = _rol((b + G(c, d, a) + x[6] + K2) & M, 13)
    # round 3
    a = _rol((a + (b ^ c ^ d) + x[3] + K3) & M, 3)
    d = _rol((d + (a ^ b ^ c) + x[7] + K3) & M, 9)
    c = _rol((c + (d ^ a ^ b) + x[2] + K3) & M, 11)
    b = _rol((b + (c ^ d ^ a) + x[6] + K3) & M, 15)
    a = _rol((a + (b ^ c ^ d) + x[1] + K3) & M, 3)
    d = _rol((d + (a ^ b ^ c) + x[5] + K3) & M, 9)
    c = _rol((c + (d ^ a ^ b) + x[0] + K3) & M, 11)
    b = _rol((b + (c ^ d ^ a) + x[4] + K3) & M, 15)
    buf[0] = (buf[0] + a) & M
    buf[1] = (buf[1] + b) & M
    buf[2] = (buf[2] + c) & M
    buf[3] = (buf[3] + d) & M


def _tea(buf: list[int], x: list[int]) -> None:
    s = 0
    b0, b1 = buf[0], buf[1]
    a, b, c, d = x[0], x[1], x[2], x[3]
    for _ in range(16):
        s = (s + DELTA) & M
        b0 = (b0 + ((((b1 << 4) + a) & M) ^ ((b1 + s) & M) ^ (((b1 >> 5) + b) & M))) & M
        b1 = (b1 + ((((b0 << 4) + c) & M) ^ ((b0 + s) & M) ^ (((b0 >> 5) + d) & M))) & M
    buf[0] = (buf[0] + b0) & M
    buf[1] = (buf[1] + b1) & M


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
    major &= ~1 & M
    if major == EXT4_HTREE_EOF_32BIT << 1:
        major = (EXT4_HTREE_EOF_32BIT - 1) << 1
    return major, minor


def hash2pos(major: int, minor: int) -> int:
    """The 64-bit readdir cookie of a hash (ext4's hash2pos)."""
    return ((major >> 1) << 32) | minor
