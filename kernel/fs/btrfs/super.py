"""Mounting btrfs, read-only (fs/btrfs/super.c, disk-io.c, volumes.c: the read side).

Mount picks the valid superblock copy with the highest generation, maps the
system chunks from its array and the rest from the chunk tree, opens the
root tree and the default subvolume (or ``subvolid=``/``subvol=``), and
refuses a filesystem whose log tree needs replay. Data reads are verified
against the checksum tree; a mirrored (DUP) chunk falls back to its good copy.
"""

from __future__ import annotations

import errno
import logging
import struct
from typing import TYPE_CHECKING

from ...errors import EFSBADCRC, corrupted, kerr
from ...uapi import MS_RDONLY
from ...vfs.inode import StatFs, SuperBlock
from .ctree import Fs, Tree, load_chunk_tree
from .inode import BtrfsInode, _entries, first_items, name_hash
from .ondisk import (
    BTRFS_MAGIC,
    CHUNK,
    CSUM_LEN,
    CSUM_NAMES,
    CSUM_TREE_OBJECTID,
    DIR_ITEM_KEY,
    EMPTY_SUBVOL_DIR_OBJECTID,
    EXTENT_CSUM_KEY,
    EXTENT_CSUM_OBJECTID,
    FS_TREE_OBJECTID,
    INCOMPAT_METADATA_UUID,
    INODE_ITEM_KEY,
    KEY,
    ROOT_ITEM_BYTENR_OFFSET,
    ROOT_ITEM_DIRID_OFFSET,
    ROOT_ITEM_KEY,
    ROOT_ITEM_LEVEL_OFFSET,
    ROOT_TREE_DIR_OBJECTID,
    STRIPE,
    SUPER,
    SUPER_FIELDS,
    SUPER_INFO_SIZE,
    SUPER_METADATA_UUID_OFFSET,
    SUPER_OFFSETS,
    SUPER_SYS_CHUNK_ARRAY_MAX,
    SUPER_SYS_CHUNK_ARRAY_OFFSET,
    SUPPORTED_INCOMPAT,
)

if TYPE_CHECKING:
    from ...block.blkdev import BlockDevice

log = logging.getLogger(__name__)
BTRFS_SUPER_MAGIC = 0x9123683E
_DEV_ITEM_DEVID = struct.Struct("<Q")
_DEV_ITEM_OFFSET = 0xC9


class Subvol:
    """A subvolume: its tree, its root directory and its st_dev."""

    __slots__ = ("id", "tree", "dirid", "dev")

    def __init__(self, id_: int, tree: Tree | None, dirid: int, dev: int) -> None:
        self.id, self.tree, self.dirid, self.dev = id_, tree, dirid, dev


def _parse_super(raw: bytes, offset: int) -> dict[str, object] | None:
    vals = dict(zip(SUPER_FIELDS, SUPER.unpack_from(raw, 0), strict=True))
    if vals["magic"] != BTRFS_MAGIC or vals["bytenr"] != offset:
        return None
    return vals


class BtrfsSuper(SuperBlock):
    fstype = "btrfs"
    magic = BTRFS_SUPER_MAGIC

    def __init__(self, kernel: object, bdev: BlockDevice, flags: int, options: str) -> None:
        super().__init__(kernel, bdev, flags)
        if not flags & MS_RDONLY:
            raise kerr(errno.EROFS, "btrfs", "btrfs is read-only in this kernel (mount read-only)")
        self.rdonly = True
        subvol_opt, subvolid_opt = self._options(options)
        sb = self._load_super(bdev)
        self.sbv = sb
        self.blocksize = int(sb["sectorsize"])  # type: ignore[call-overload]
        self.time_gran = 1
        budget = kernel.bcache.budget  # type: ignore[attr-defined]
        fs = Fs(bdev, self.fsid, int(sb["nodesize"]), self.blocksize,  # type: ignore[call-overload]
                int(sb["csum_type"]), self.devid, budget // int(sb["nodesize"]))  # type: ignore[call-overload]
        self.fs = fs
        self._sys_chunks(sb)
        load_chunk_tree(fs, int(sb["chunk_root"]), int(sb["chunk_root_level"]))  # type: ignore[call-overload]
        if sb["log_root"]:
            raise kerr(errno.EOPNOTSUPP, "btrfs", "the log tree needs replay (the filesystem was "
                       "not unmounted cleanly after an fsync); replay of log trees is not "
                       "supported: mount it once with Linux, or run `btrfs rescue zero-log`")
        self.root_tree = Tree(fs, int(sb["root"]), int(sb["root_level"]), "root tree")  # type: ignore[call-overload]
        csum_root = self._root_item(CSUM_TREE_OBJECTID)
        self.csum_tree = Tree(fs, csum_root[0], csum_root[1], "csum tree") if csum_root else None
        self._subvols: dict[int, Subvol] = {}
        if subvolid_opt is not None:
            sid = subvolid_opt
        else:
            sid = self._default_subvol()
        top = self.subvol(sid, self.dev)
        if top.tree is None:
            raise kerr(errno.ENOENT, "btrfs", f"no subvolume {sid}")
        root = self._load(top, top.dirid)
        if subvol_opt:
            root = self._walk_subvol(root, subvol_opt)
        self.root = root

    # -- mount ------------------------------------------------------------------------------------
    def _options(self, options: str) -> tuple[str | None, int | None]:
        subvol: str | None = None
        subvolid: int | None = None
        for opt in filter(None, (o.strip() for o in options.split(","))):
            if opt.startswith("subvol="):
                subvol = opt[7:]
            elif opt.startswith("subvolid="):
                try:
                    subvolid = int(opt[9:], 0)
                except ValueError:
                    raise kerr(errno.EINVAL, "btrfs", f"bad subvolid {opt[9:]!r}") from None
                if subvolid == 0:
                    subvolid = None
            elif opt in ("ro", "rw", "noatime", "relatime", "nodiratime", "norecovery",
                         "nologreplay", "rescue=nologreplay", "compress", "space_cache",
                         "nospace_cache", "ssd", "nossd", "discard", "nodiscard", "autodefrag",
                         "noautodefrag", "acl", "noacl", "user_subvol_rm_allowed") \
                    or opt.startswith(("compress=", "compress-force=", "space_cache=",
                                       "commit=", "thread_pool=", "discard=", "rescue=",
                                       "device=", "degraded")):
                continue
            else:
                raise kerr(errno.EINVAL, "btrfs", f"unknown or unsupported mount option {opt!r}")
        return subvol, subvolid

    def _load_super(self, bdev: BlockDevice) -> dict[str, object]:
        """The valid superblock copy with the highest generation."""
        from .ctree import make_csum

        best: dict[str, object] | None = None
        bad = []
        for off in SUPER_OFFSETS:
            if off + SUPER_INFO_SIZE > bdev.size:
                break
            raw = bytes(bdev.read(off, SUPER_INFO_SIZE))
            vals = _parse_super(raw, off)
            if vals is None:
                if off == SUPER_OFFSETS[0]:
                    bad.append("no btrfs magic in the primary superblock")
                continue
            ctype = int(vals["csum_type"])  # type: ignore[call-overload]
            if ctype not in CSUM_NAMES:
                raise kerr(errno.EOPNOTSUPP, "btrfs superblock", f"checksum type {ctype}")
            fn = make_csum(ctype)
            n = CSUM_LEN[ctype]
            if fn(raw[32:])[:n] != raw[:n]:  # type: ignore[operator]
                bad.append(f"superblock at {off}: checksum mismatch")
                continue
            vals["raw"] = raw
            if best is None or int(vals["generation"]) > int(best["generation"]):  # type: ignore[call-overload]
                best = vals
        if best is None:
            raise corrupted("btrfs superblock", "; ".join(bad) or "no valid superblock",
                            EFSBADCRC if any("checksum" in b for b in bad) else errno.EUCLEAN)
        best_raw = best["raw"]
        assert isinstance(best_raw, bytes)
        raw = best_raw
        incompat = int(best["incompat_flags"])  # type: ignore[call-overload]
        unknown = incompat & ~SUPPORTED_INCOMPAT
        if unknown:
            raise kerr(errno.EOPNOTSUPP, "btrfs superblock", f"unsupported features {unknown:#x}")
        ss, ns = int(best["sectorsize"]), int(best["nodesize"])  # type: ignore[call-overload]
        if ss not in (4096, 8192, 16384, 32768, 65536) or ns < ss or ns > 65536 or ns & (ns - 1):
            raise corrupted("btrfs superblock", f"sector size {ss}, node size {ns}")
        self.fsid = raw[SUPER_METADATA_UUID_OFFSET:SUPER_METADATA_UUID_OFFSET + 16] \
            if incompat & INCOMPAT_METADATA_UUID else raw[0x20:0x30]
        self.devid = _DEV_ITEM_DEVID.unpack_from(raw, _DEV_ITEM_OFFSET)[0]
        if int(best["num_devices"]) != 1:  # type: ignore[call-overload]
            log.warning("btrfs: a filesystem of %s devices: only this one is attached",
                        best["num_devices"])
        return best

    def _sys_chunks(self, sb: dict[str, object]) -> None:
        raw = sb["raw"]
        assert isinstance(raw, bytes)
        size = int(sb["sys_chunk_array_size"])  # type: ignore[call-overload]
        if size > SUPER_SYS_CHUNK_ARRAY_MAX:
            raise corrupted("btrfs superblock", f"system chunk array of {size} bytes")
        arr = memoryview(raw)[SUPER_SYS_CHUNK_ARRAY_OFFSET:SUPER_SYS_CHUNK_ARRAY_OFFSET + size]
        pos = 0
        while pos < size:
            if pos + KEY.size + CHUNK.size > size:
                raise corrupted("btrfs superblock", "system chunk array truncated")
            _oid, _typ, logical = KEY.unpack_from(arr, pos)
            pos += KEY.size
            num = struct.unpack_from("<H", arr, pos + 44)[0]
            clen = CHUNK.size + num * STRIPE.size
            if pos + clen > size:
                raise corrupted("btrfs superblock", "system chunk array truncated")
            self.fs.add_chunk(logical, arr[pos:pos + clen], "btrfs system chunk array")
            pos += clen

    def _root_item(self, tree_id: int) -> tuple[int, int, int] | None:
        """(bytenr, level, root dirid) of a tree's newest ROOT_ITEM."""
        hit = None
        for k, data in self.root_tree.items((tree_id, ROOT_ITEM_KEY, 0),
                                            (tree_id, ROOT_ITEM_KEY + 1, 0)):
            hit = (k, data)
        if hit is None:
            return None
        data = hit[1]
        if len(data) < ROOT_ITEM_LEVEL_OFFSET + 1:
            raise corrupted(f"btrfs root item {tree_id}", "truncated")
        bytenr = int.from_bytes(data[ROOT_ITEM_BYTENR_OFFSET:ROOT_ITEM_BYTENR_OFFSET + 8], "little")
        dirid = int.from_bytes(data[ROOT_ITEM_DIRID_OFFSET:ROOT_ITEM_DIRID_OFFSET + 8], "little")
        return bytenr, data[ROOT_ITEM_LEVEL_OFFSET], dirid

    def _default_subvol(self) -> int:
        data = self.root_tree.get((ROOT_TREE_DIR_OBJECTID, DIR_ITEM_KEY, name_hash(b"default")))
        if data is not None:
            for loc, _ft, name, _v in _entries(data, "btrfs default subvolume"):
                if name == b"default":
                    return loc[0]
        return FS_TREE_OBJECTID

    def subvol(self, sid: int, dev: int | None = None) -> Subvol:
        sv = self._subvols.get(sid)
        if sv is None:
            item = self._root_item(sid)
            if item is None:
                sv = Subvol(sid, None, EMPTY_SUBVOL_DIR_OBJECTID, dev or self.kernel.anon_dev())  # type: ignore[attr-defined]
            else:
                bytenr, level, dirid = item
                sv = Subvol(sid, Tree(self.fs, bytenr, level, f"subvolume {sid} tree"), dirid,
                            dev if dev is not None else self.kernel.anon_dev())  # type: ignore[attr-defined]
            self._subvols[sid] = sv
        return sv

    def _walk_subvol(self, root: BtrfsInode, path: str) -> BtrfsInode:
        node = root
        for part in filter(None, path.split("/")):
            nxt = node.lookup(part.encode())
            if nxt is None or not nxt.is_dir:
                raise kerr(errno.ENOENT, "btrfs", f"subvolume path {path!r} not found")
            node = nxt  # type: ignore[assignment]
        return node

    # -- inodes -----------------------------------------------------------------------------------
    def _load(self, sv: Subvol, ino: int) -> BtrfsInode:
        key = sv.id << 64 | ino

        def load(_k: int) -> BtrfsInode:
            if sv.tree is None:
                return BtrfsInode(self, sv, ino, None)
            data, rest = first_items(sv.tree, ino)
            if data is None:
                raise corrupted(f"btrfs subvolume {sv.id}", f"inode {ino} has no inode item")
            return BtrfsInode(self, sv, ino, data, rest)

        return self.iget(key, load)  # type: ignore[return-value]

    def inode_at(self, sv: Subvol, loc: tuple[int, int, int], where: str) -> BtrfsInode:
        """The inode a directory entry's location key names (a subvolume's root for a
        ROOT_ITEM location)."""
        oid, typ, _off = loc
        if typ == ROOT_ITEM_KEY:
            target = self.subvol(oid)
            return self._load(target, target.dirid)
        if typ != INODE_ITEM_KEY:
            raise corrupted(where, f"entry points to a key of type {typ}")
        return self._load(sv, oid)

    # -- data ---------------------------------------------------------------------------------------
    def read_data(self, logical: int, length: int, verify: bool, where: str) -> bytes:
        """File data at ``logical``, each sector checked against the checksum tree."""
        fs = self.fs
        ss = self.blocksize
        start = logical - logical % ss
        stop = -(-(logical + length) // ss) * ss
        copies = fs.map(start, stop - start)
        runs = self._csums(start, stop) if verify and self.csum_tree is not None else []
        last: OSError | None = None
        for p in copies:
            buf = bytearray(stop - start)
            data = memoryview(buf)
            fs.dev.read_cached(p, data)
            bad = self._bad_sector(data, start, runs)
            if bad is None:
                if logical == start and length == len(buf):
                    return bytes(buf)
                return bytes(data[logical - start:logical - start + length])
            last = corrupted(where, f"data checksum mismatch at logical {bad}", errno.EIO)
        assert last is not None
        raise last

    def _bad_sector(self, data: memoryview, start: int,
                    runs: list[tuple[int, memoryview]]) -> int | None:
        """The first sector of ``data`` (read from ``start``) whose checksum in ``runs``
        does not match, or None."""
        fs = self.fs
        ss, n = self.blocksize, fs.csum_len
        for at, sums in runs:
            got = fs.csum_many(data[at - start:at - start + len(sums) // n * ss], ss)
            if got != sums:
                k = next(i for i in range(0, len(sums), n) if got[i:i + n] != sums[i:i + n])
                return at + k // n * ss
        return None

    def _csums(self, start: int, stop: int) -> list[tuple[int, memoryview]]:
        """Stored checksums of the sectors in [start, stop), as runs: (first sector, the
        run's checksums end to end); sectors without one are not checked."""
        assert self.csum_tree is not None
        ss, n = self.blocksize, self.fs.csum_len
        out: list[tuple[int, memoryview]] = []
        first = self.csum_tree.floor((EXTENT_CSUM_OBJECTID, EXTENT_CSUM_KEY, start))
        begin = first[0] if first is not None and first[0][:2] == (EXTENT_CSUM_OBJECTID,
                                                                     EXTENT_CSUM_KEY) \
            else (EXTENT_CSUM_OBJECTID, EXTENT_CSUM_KEY, start)
        for (_o, _t, at), data in self.csum_tree.items(begin, (EXTENT_CSUM_OBJECTID,
                                                               EXTENT_CSUM_KEY, stop)):
            # one item holds the sums of a run of sectors: take only those in range
            count = len(data) // n
            lo = max(0, (start - at) // ss)
            hi = min(count, (stop - at + ss - 1) // ss)
            if lo < hi:
                out.append((at + lo * ss, data[lo * n:hi * n]))
        return out

    # -- operations -----------------------------------------------------------------------------
    def statfs(self) -> StatFs:
        sb = self.sbv
        ss = self.blocksize
        total = int(sb["total_bytes"]) // ss  # type: ignore[call-overload]
        used = int(sb["bytes_used"]) // ss  # type: ignore[call-overload]
        fsid = int.from_bytes(self.fsid[:8], "little") ^ int.from_bytes(self.fsid[8:], "little")
        return StatFs(BTRFS_SUPER_MAGIC, ss, total, max(total - used, 0), max(total - used, 0),
                      0, 0, f_fsid=fsid, f_namelen=255)

    def remount(self, flags: int, options: str) -> None:
        if not flags & MS_RDONLY:
            raise kerr(errno.EROFS, "btrfs", "btrfs is read-only in this kernel")
        self.flags = flags

    def show_options(self) -> str:
        return "ro"


def mount(kernel: object, bdev: BlockDevice | None, flags: int, options: str) -> SuperBlock:
    """``BtrfsType.mount`` (the type itself is in the package, light to import)."""
    if bdev is None:
        raise kerr(errno.ENOTBLK, "btrfs")
    return BtrfsSuper(kernel, bdev, flags, options)
