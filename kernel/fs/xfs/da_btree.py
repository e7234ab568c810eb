"""Directory/attribute B-tree blocks (libxfs/xfs_da_btree.c) and the name hash.

Both directories (leaf space) and attribute forks index names by a 32-bit
hash in a "dabtree": interior node blocks hold (hashval, before) pairs, where
hashval is the largest hash below ``before``; leaves hold the sorted hashes.
This module reads (possibly multi-block) da blocks through a fork's extent
map, verifies them, caches parsed forms and walks nodes to the leaf that may
hold a hash.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import corrupted
from . import ondisk as od
from .cksum import crc_ok

if TYPE_CHECKING:
    from .inode import XfsInode

_M = 0xFFFFFFFF
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_node_hdr = struct.Struct(">HH")
DATA_FORK = 0
ATTR_FORK = 1


def da_hashname(name: bytes) -> int:
    """xfs_da_hashname: the rotate-and-xor hash of a name, 7 bits per byte."""
    h = 0
    n = len(name)
    i = 0
    while n - i >= 4:
        h = ((name[i] << 21) ^ (name[i + 1] << 14) ^ (name[i + 2] << 7) ^ name[i + 3]
             ^ (((h << 28) | (h >> 4)) & _M))
        i += 4
    r = n - i
    if r == 3:
        h = (name[i] << 14) ^ (name[i + 1] << 7) ^ name[i + 2] ^ (((h << 21) | (h >> 11)) & _M)
    elif r == 2:
        h = (name[i] << 7) ^ name[i + 1] ^ (((h << 14) | (h >> 18)) & _M)
    elif r == 1:
        h = name[i] ^ (((h << 7) | (h >> 25)) & _M)
    return h & _M


_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def ascii_ci_hashname(name: bytes) -> int:
    """The hash of ASCII case-insensitive filesystems (names folded to lower case)."""
    return da_hashname(name.translate(_FOLD))


def ascii_ci_fold(name: bytes) -> bytes:
    return name.translate(_FOLD)


def read_dablock(inode: XfsInode, fork: int, dablk: int, nfsb: int, what: str) -> memoryview:
    """The ``nfsb`` filesystem blocks of ``fork`` from file block ``dablk``, verified.

    Single-block reads return a view of the cached buffer; larger directory
    blocks are assembled once and kept in the superblock's da cache. The
    magic decides which v5 header (dir3 block header or da3 blkinfo) is
    checked: CRC, owner inode, disk address and UUID. EUCLEAN names the
    block when anything is wrong; a hole where a block must be is EUCLEAN too.
    """
    sb = inode.sb
    geo = sb.geo
    emap = inode.fork_map(fork)
    runs = emap.map_run(dablk, nfsb)
    if runs is None:
        raise corrupted(what, f"block {dablk} of inode {inode.ino} is a hole")
    bs = geo.blocksize
    bcache = sb.bcache
    if nfsb == 1:
        buf = bcache.bread(sb.xdev, runs[0][0], bs)
        if buf.private is not _VERIFIED:
            _verify(inode, buf.data, runs[0][0], what)
            buf.private = _VERIFIED
        return memoryview(buf.data)
    key = (inode.ino, fork, dablk, "raw")
    cached = sb.dacache.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    parts: list[bytes | bytearray] = []
    for pblk, n in runs:
        parts.extend(b.data for b in bcache.bread_many(sb.xdev, pblk, n, bs))
    data = memoryview(b"".join(parts))
    _verify(inode, data, runs[0][0], what)
    sb.dacache.put(key, data)
    return data


_VERIFIED = "xfs-da"


def _verify(inode: XfsInode, data: bytes | bytearray | memoryview, pblk: int, what: str) -> None:
    geo = inode.sb.geo
    if not geo.crc:
        return
    magic32 = _u32.unpack_from(data, 0)[0]
    if magic32 in (od.XFS_DIR3_BLOCK_MAGIC, od.XFS_DIR3_DATA_MAGIC, od.XFS_DIR3_FREE_MAGIC):
        hdr = od.xfs_dir3_blk_hdr.unpack_from(data, 0)
        crc_off = od.XFS_DIR3_BLK_HDR_CRC_OFF
        owner, blkno, uuid = hdr.owner, hdr.blkno, hdr.uuid
    else:
        magic16 = _u16.unpack_from(data, 8)[0]
        if magic16 not in od.DA3_MAGICS:
            raise corrupted(what, f"bad magic {magic32:#x}/{magic16:#x} in a v5 block")
        info = od.xfs_da3_blkinfo.unpack_from(data, 0)
        crc_off = od.XFS_DA3_BLKINFO_CRC_OFF
        owner, blkno, uuid = info.owner, info.blkno, info.uuid
    if not crc_ok(data, crc_off):
        # log recovery could not restamp a directory block it saw only in part
        skip = getattr(inode.sb.xdev, "unverifiable", ())
        if geo.linear_to_daddr(pblk) not in skip:
            raise corrupted(what, "metadata checksum mismatch")
    if owner != inode.ino or blkno != geo.linear_to_daddr(pblk) or uuid != geo.meta_uuid:
        raise corrupted(what, f"block header does not belong here (owner {owner}, daddr {blkno})")


class DaNode:
    """A parsed interior node: level, hashes and child block numbers."""

    __slots__ = ("level", "hashes", "befores")

    def __init__(self, level: int, hashes: list[int], befores: list[int]) -> None:
        self.level = level
        self.hashes = hashes
        self.befores = befores


def parse_node(inode: XfsInode, data: memoryview, blksize: int, what: str) -> DaNode:
    crc = inode.sb.geo.crc
    hdr = od.XFS_DA3_NODE_HDR_SIZE if crc else od.XFS_DA_NODE_HDR_SIZE
    count, level = _node_hdr.unpack_from(data, hdr - (8 if crc else 4))
    if not 1 <= count <= (blksize - hdr) // 8 or not 1 <= level <= od.XFS_DA_NODE_MAXDEPTH:
        raise corrupted(what, f"bad node header ({count} entries, level {level})")
    vals = struct.unpack_from(f">{2 * count}I", data, hdr)
    hashes = list(vals[0::2])
    if any(hashes[i] > hashes[i + 1] for i in range(count - 1)):
        raise corrupted(what, "node hashes out of order")
    return DaNode(level, hashes, list(vals[1::2]))


def magic16(data: memoryview) -> int:
    return _u16.unpack_from(data, 8)[0]  # type: ignore[no-any-return]


def forw(data: memoryview) -> int:
    return _u32.unpack_from(data, 0)[0]  # type: ignore[no-any-return]


def walk_to_leaf(inode: XfsInode, fork: int, root: int, nfsb: int, hashval: int,
                 node_magic: int, what: str) -> tuple[int, memoryview]:
    """From the root block, the leaf block that holds ``hashval`` if anything does.

    Descends through node blocks (``node_magic``) choosing the first child
    whose largest hash is at least ``hashval``. Levels must decrease.
    """
    sb = inode.sb
    blk = root
    level = od.XFS_DA_NODE_MAXDEPTH + 1
    blksize = sb.geo.blocksize * nfsb
    for _ in range(od.XFS_DA_NODE_MAXDEPTH + 1):
        data = read_dablock(inode, fork, blk, nfsb, f"{what} block {blk}")
        if magic16(data) != node_magic:
            return blk, data
        node = cached_parse(inode, fork, blk, "node",
                            _bind(parse_node, inode, data, blksize, f"{what} node {blk}"))
        if node.level >= level:
            raise corrupted(f"{what} node {blk}", "node levels do not decrease")
        level = node.level
        i = bisect.bisect_left(node.hashes, hashval)
        if i == len(node.hashes):
            i -= 1
        blk = node.befores[i]
    raise corrupted(what, "dabtree deeper than the maximum")


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


def leftmost_leaf(inode: XfsInode, fork: int, root: int, nfsb: int, node_magic: int,
                  what: str) -> tuple[int, memoryview]:
    return walk_to_leaf(inode, fork, root, nfsb, 0, node_magic, what)


def cached_parse(inode: XfsInode, fork: int, blk: int, kind: str, parse: Callable[[], Any]) -> Any:
    """A parsed form of a da block, kept in the superblock's bounded cache."""
    cache = inode.sb.dacache
    key = (inode.ino, fork, blk, kind)
    obj = cache.get(key)
    if obj is None:
        obj = parse()
        cache.put(key, obj)
    return obj
