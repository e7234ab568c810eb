"""btrfs B-trees (fs/btrfs/ctree.c, volumes.c, disk-io.c's read side).

``Fs`` holds what every tree needs: the checksum algorithm, the chunk map
(logical -> physical, from the superblock's system chunk array and then the
chunk tree) and a bounded cache of verified tree blocks. A tree is searched
from its root by key; ``items`` walks leaves in key order from a key on,
the generic iteration every item family (inodes, directories, extents,
checksums, roots) is read with. Every block is checked: its checksum (the
good mirror of a DUP chunk is used when the first fails), its bytenr, fsid,
level and item bounds; walks are bounded by the tree height.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import operator
import struct
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...errors import EFSBADCRC, corrupted, kerr
from ...lib.crc import crc32c
from .ondisk import (
    BLOCK_GROUP_RAID1C3,
    BLOCK_GROUP_RAID1C4,
    CHUNK,
    CHUNK_ITEM_KEY,
    CSUM_BLAKE2,
    CSUM_CRC32C,
    CSUM_LEN,
    CSUM_SHA256,
    CSUM_XXHASH,
    HEADER,
    HEADER_SIZE,
    ITEM,
    KEY_PTR,
    MIRRORED,
    STRIPE,
    STRIPED,
)

if TYPE_CHECKING:
    from ...block.blkdev import BlockDevice

Key = tuple[int, int, int]
MAX_LEVEL = 8


def make_csum(csum_type: int) -> object:
    """The checksum function of ``csum_type``: bytes -> the stored digest (its length)."""
    if csum_type == CSUM_CRC32C:
        return lambda data: crc32c(data).to_bytes(4, "little")
    if csum_type == CSUM_XXHASH:
        import xxhash

        return lambda data: xxhash.xxh64_intdigest(data).to_bytes(8, "little")
    if csum_type == CSUM_SHA256:
        return lambda data: hashlib.sha256(data).digest()
    if csum_type == CSUM_BLAKE2:
        return lambda data: hashlib.blake2b(data, digest_size=32).digest()
    raise kerr(errno.EOPNOTSUPP, "btrfs superblock", f"unknown checksum type {csum_type}")


def make_csum_many(csum_type: int, one: Any) -> Any:
    """(data, sector size) -> the digests of every sector of ``data``, end to end."""
    if csum_type == CSUM_CRC32C:
        def crc32c_many(data: memoryview, ss: int) -> bytes:
            k = len(data) // ss
            return struct.pack(f"<{k}I", *[crc32c(data[i:i + ss])
                                           for i in range(0, k * ss, ss)])
        return crc32c_many
    return lambda data, ss: b"".join([one(data[i:i + ss]) for i in range(0, len(data), ss)])


class Chunk:
    __slots__ = ("start", "length", "type", "stripes")

    def __init__(self, start: int, length: int, ctype: int, stripes: list[tuple[int, int]]) -> None:
        self.start, self.length, self.type, self.stripes = start, length, ctype, stripes


class Fs:
    """The parts of a mounted btrfs the trees are read through."""

    def __init__(self, dev: BlockDevice, fsid: bytes, nodesize: int, sectorsize: int,
                 csum_type: int, devid: int, cache_blocks: int) -> None:
        self.dev = dev
        self.fsid = fsid
        self.nodesize = nodesize
        self.sectorsize = sectorsize
        self.csum_type = csum_type
        self.csum = make_csum(csum_type)
        self.csum_many = make_csum_many(csum_type, self.csum)
        self.csum_len = CSUM_LEN[csum_type]
        self.devid = devid
        self.chunks: list[Chunk] = []
        self._starts: list[int] = []
        self._cache: OrderedDict[int, Node] = OrderedDict()
        self._cache_max = max(cache_blocks, 64)

    # -- chunks ---------------------------------------------------------------------------
    def add_chunk(self, logical: int, data: bytes | memoryview, where: str) -> None:
        """Add a chunk item (from the system chunk array or the chunk tree)."""
        if len(data) < CHUNK.size:
            raise corrupted(where, "chunk item truncated")
        length, _owner, _stripe_len, ctype, _a, _w, _ss, num, _sub = CHUNK.unpack_from(data, 0)
        if not num or len(data) < CHUNK.size + num * STRIPE.size or not length:
            raise corrupted(where, f"chunk at {logical} has {num} stripes, length {length}")
        stripes = []
        for i in range(num):
            devid, offset, _uuid = STRIPE.unpack_from(data, CHUNK.size + i * STRIPE.size)
            stripes.append((devid, offset))
        i = bisect.bisect_left(self._starts, logical)
        if i < len(self._starts) and self._starts[i] == logical:
            return  # the same chunk from both places
        self._starts.insert(i, logical)
        self.chunks.insert(i, Chunk(logical, length, ctype, stripes))

    def map(self, logical: int, length: int) -> list[int]:
        """Physical offsets of every copy of [logical, +length) on our device (EIO if
        unmapped or striped over devices we do not have)."""
        i = bisect.bisect_right(self._starts, logical) - 1
        if i < 0:
            raise kerr(errno.EIO, "btrfs", f"logical address {logical} is in no chunk")
        c = self.chunks[i]
        if logical + length > c.start + c.length:
            raise kerr(errno.EIO, "btrfs", f"logical range [{logical}, +{length}) crosses the "
                       f"end of its chunk")
        if c.type & STRIPED and len(c.stripes) > 1:
            raise kerr(errno.EOPNOTSUPP, "btrfs", "RAID0/10/5/6 chunks need several devices")
        off = logical - c.start
        copies = [p + off for d, p in c.stripes if d == self.devid]
        if not copies:
            raise kerr(errno.EIO, "btrfs", f"logical address {logical} lives on device(s) "
                       f"{[d for d, _ in c.stripes]}, not attached")
        if not c.type & (MIRRORED | BLOCK_GROUP_RAID1C3 | BLOCK_GROUP_RAID1C4):
            copies = copies[:1]
        for p in copies:
            if p + length > self.dev.size:
                raise kerr(errno.EIO, "btrfs", f"logical address {logical} maps past the end of "
                           f"the device (truncated image?)")
        return copies

    # -- tree blocks ----------------------------------------------------------------------------
    def node(self, logical: int, level: int | None = None, owner: str = "tree") -> Node:
        """The verified tree block at ``logical`` (trying each mirror)."""
        n = self._cache.get(logical)
        if n is not None:
            self._cache.move_to_end(logical)
        else:
            ns = self.nodesize
            copies = self.map(logical, ns)
            err: OSError | None = None
            for p in copies:
                buf = bytearray(ns)
                self.dev.read_cached(p, memoryview(buf))
                data = bytes(buf)
                try:
                    n = self._verify(logical, data, owner)
                    break
                except OSError as e:
                    err = e
            if n is None:
                assert err is not None
                raise err
            self._cache[logical] = n
            if len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        if level is not None and n.level != level:
            raise corrupted(f"btrfs {owner} block {logical}", f"level {n.level}, expected {level}")
        return n

    def _verify(self, logical: int, data: bytes, owner: str) -> Node:
        where = f"btrfs {owner} block {logical}"
        if self.csum(memoryview(data)[32:])[:self.csum_len] != data[:self.csum_len]:  # type: ignore[operator]
            raise corrupted(where, "checksum mismatch", EFSBADCRC)
        _c, fsid, bytenr, _flags, _cu, gen, own, nritems, level = HEADER.unpack_from(data, 0)
        if bytenr != logical:
            raise corrupted(where, f"header says bytenr {bytenr}")
        if fsid != self.fsid:
            raise corrupted(where, "belongs to another filesystem (fsid)")
        if level >= MAX_LEVEL:
            raise corrupted(where, f"level {level}")
        ns = self.nodesize
        esize = ITEM.size if level == 0 else KEY_PTR.size
        if HEADER_SIZE + nritems * esize > ns:
            raise corrupted(where, f"{nritems} items do not fit")
        if level and not nritems:
            raise corrupted(where, "node without children")  # only a leaf may be empty
        return Node(data, level, nritems, where, gen)


_LEAF_ITEMS: dict[int, struct.Struct] = {}  # nritems -> the struct of that many btrfs_items
_NODE_PTRS: dict[int, struct.Struct] = {}  # nritems -> that many btrfs_key_ptrs


def _array(cache: dict[int, struct.Struct], one: struct.Struct, n: int) -> struct.Struct:
    st = cache.get(n)
    if st is None:
        st = cache[n] = struct.Struct("<" + one.format.lstrip("<") * n)
    return st


class Node:
    """A verified tree block: keys and either item data (leaf) or child pointers."""

    __slots__ = ("data", "level", "nritems", "where", "gen", "keys", "_view", "_offs", "_sizes",
                 "ptrs")

    def __init__(self, data: bytes, level: int, nritems: int, where: str, gen: int) -> None:
        self.data, self.level, self.nritems, self.where, self.gen = data, level, nritems, where, gen
        self._view = memoryview(data)
        # the whole item (or pointer) array in one unpack, then split by field
        if level == 0:
            flat = _array(_LEAF_ITEMS, ITEM, nritems).unpack_from(data, HEADER_SIZE)
            keys = list(zip(flat[0::5], flat[1::5], flat[2::5]))
            offs, sizes = flat[3::5], flat[4::5]
            first = nritems * ITEM.size  # where item data may start, from the header's end
            if offs and (min(offs) < first or
                         max(map(operator.add, offs, sizes)) > len(data) - HEADER_SIZE):
                bad = next(i for i in range(nritems)
                           if offs[i] < first or offs[i] + sizes[i] > len(data) - HEADER_SIZE)
                raise corrupted(where, f"item {bad} data out of bounds")
            self._offs, self._sizes = offs, sizes
            self.ptrs: tuple[int, ...] = ()
        else:
            flat = _array(_NODE_PTRS, KEY_PTR, nritems).unpack_from(data, HEADER_SIZE)
            keys = list(zip(flat[0::5], flat[1::5], flat[2::5]))
            self.ptrs = flat[3::5]
            self._offs = self._sizes = ()
        if not all(map(operator.lt, keys, keys[1:])):
            bad = next(i for i in range(1, nritems) if keys[i] <= keys[i - 1])
            raise corrupted(where, f"keys out of order at item {bad}")
        self.keys = keys

    def item(self, i: int) -> memoryview:
        start = HEADER_SIZE + self._offs[i]
        return self._view[start:start + self._sizes[i]]


NodePath = list[tuple[Node, int]]  # (internal node, index of the child taken), root first


class Tree:
    """One B-tree, from its root block.

    A search starts from the path of the one before when every node on it would pick
    the same child again (the finger): the walk of a directory's inodes, one after
    another, then costs no descent from the root. The tree is read-only, so the nodes
    on the path never change."""

    def __init__(self, fs: Fs, root: int, level: int, name: str) -> None:
        self.fs, self.root, self.level, self.name = fs, root, level, name
        # the last search: its internal nodes with the child each took, and its leaf
        self._finger: NodePath = []
        self._leaf: Node | None = None

    def _descend(self, key: Key) -> tuple[NodePath, Node]:
        """The internal nodes down to the leaf a search for ``key`` reaches (each with
        the child it takes: the last whose key is <= ``key``, else the first), and the
        leaf."""
        finger = self._finger
        if finger:
            for node, j in finger:
                keys = node.keys
                if (j and key < keys[j]) or (j + 1 < node.nritems and key >= keys[j + 1]):
                    break
            else:
                assert self._leaf is not None
                return finger[:], self._leaf
        fs = self.fs
        path: NodePath = []
        node = fs.node(self.root, self.level, self.name)
        while node.level > 0:
            i = max(bisect.bisect_right(node.keys, key) - 1, 0)
            path.append((node, i))
            node = fs.node(node.ptrs[i], node.level - 1, self.name)
        self._finger, self._leaf = path[:], node
        return path, node

    def items(self, start: Key, end: Key | None = None) -> Iterator[tuple[Key, memoryview]]:
        """Every (key, data) with start <= key (< end), in key order."""
        fs = self.fs
        path, leaf = self._descend(start)
        i = bisect.bisect_left(leaf.keys, start)
        while True:
            keys = leaf.keys
            while i < leaf.nritems:
                k = keys[i]
                if end is not None and k >= end:
                    return
                yield k, leaf.item(i)
                i += 1
            # next leaf: climb to the first ancestor with a next child
            while path:
                parent, j = path.pop()
                if j + 1 < parent.nritems:
                    path.append((parent, j + 1))
                    child = fs.node(parent.ptrs[j + 1], parent.level - 1, self.name)
                    while child.level > 0:
                        path.append((child, 0))
                        child = fs.node(child.ptrs[0], child.level - 1, self.name)
                    leaf, i = child, 0
                    break
            else:
                return

    def floor(self, key: Key) -> tuple[Key, memoryview] | None:
        """The item with the greatest key <= ``key`` (None if there is none)."""
        fs = self.fs
        path, node = self._descend(key)
        i = bisect.bisect_right(node.keys, key) - 1
        if i >= 0:
            return node.keys[i], node.item(i)
        # everything in this leaf is greater: the last item of the previous leaf
        while path:
            parent, j = path.pop()
            if j > 0:
                child = fs.node(parent.ptrs[j - 1], parent.level - 1, self.name)
                while child.level > 0:
                    child = fs.node(child.ptrs[-1], child.level - 1, self.name)
                if child.nritems:
                    return child.keys[-1], child.item(child.nritems - 1)
                return None
        return None

    def get(self, key: Key) -> memoryview | None:
        """The data of the item with exactly ``key`` (None if there is none)."""
        _path, node = self._descend(key)
        i = bisect.bisect_left(node.keys, key)
        if i < node.nritems and node.keys[i] == key:
            return node.item(i)
        return None

    def first(self, start: Key, end: Key) -> tuple[Key, memoryview] | None:
        for k, data in self.items(start, end):
            return k, data
        return None


def load_chunk_tree(fs: Fs, root: int, level: int) -> None:
    tree = Tree(fs, root, level, "chunk tree")
    for (oid, typ, off), data in tree.items((0, 0, 0)):
        if typ == CHUNK_ITEM_KEY:
            fs.add_chunk(off, data, f"btrfs chunk tree item {oid}/{off}")

