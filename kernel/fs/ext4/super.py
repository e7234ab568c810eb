"""Mounting ext2/ext3/ext4 (fs/ext4/super.c): superblock, group descriptors, inodes.

Mount reads and validates the superblock (geometry, features, checksum),
loads and verifies every group descriptor, replays the journal when the
filesystem needs recovery (into an in-memory overlay for read-only mounts,
so the image is never written; onto the device for read-write mounts), and
looks at the orphan list and the orphan file.

A read-write mount clears the superblock's valid flag while mounted (a
crash then sends e2fsck over the whole filesystem, as for Linux without a
journal) and sets it again, with exact free counts, on unmount. Every
system call's changes form one transaction (``transaction``): inodes changed
in it are encoded into their inode-table slots and the allocator's group
descriptors are stored when it ends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import struct
from typing import TYPE_CHECKING

from ...block.overlay import OverlayDevice
from ...errors import EFSBADCRC, corrupted, kerr
from ...lib.crc import crc32c_raw
from ...uapi import MS_RDONLY
from ...vfs.inode import InodeCache, StatFs, SuperBlock
from . import csum as ck
from . import file as f
from . import write as w
from .alloc import Allocator
from .inode import Ext4Inode
from .jbd2.commit import JournalingCache, JournalWriter
from .jbd2.journal import Journal
from .jbd2.ondisk import JSB_CHECKSUM_OFFSET
from .jbd2.recovery import RecoveryInfo, recover
from .ondisk import (
    COMPAT_DIR_INDEX,
    COMPAT_FAST_COMMIT,
    COMPAT_HAS_JOURNAL,
    COMPAT_ORPHAN_FILE,
    COMPAT_SPARSE_SUPER2,
    EXT2_FLAGS_UNSIGNED_HASH,
    EXT4_BG_INODE_UNINIT,
    EXT4_CRC32C_CHKSUM,
    EXT4_DYNAMIC_REV,
    EXT4_ERROR_FS,
    EXT4_GOOD_OLD_FIRST_INO,
    EXT4_GOOD_OLD_INODE_SIZE,
    EXT4_GOOD_OLD_REV,
    EXT4_MAX_BLOCK_LOG_SIZE,
    EXT4_MAX_DESC_SIZE,
    EXT4_MIN_BLOCK_LOG_SIZE,
    EXT4_MIN_DESC_SIZE,
    EXT4_MIN_DESC_SIZE_64BIT,
    EXT4_ORPHAN_BLOCK_MAGIC,
    EXT4_OS_LINUX,
    EXT4_ROOT_INO,
    EXT4_SUPER_MAGIC,
    EXT4_VALID_FS,
    INCOMPAT_64BIT,
    INCOMPAT_CASEFOLD,
    INCOMPAT_COMPRESSION,
    INCOMPAT_CSUM_SEED,
    INCOMPAT_DIRDATA,
    INCOMPAT_EA_INODE,
    INCOMPAT_ENCRYPT,
    INCOMPAT_EXTENTS,
    INCOMPAT_FILETYPE,
    INCOMPAT_FLEX_BG,
    INCOMPAT_INLINE_DATA,
    INCOMPAT_JOURNAL_DEV,
    INCOMPAT_LARGEDIR,
    INCOMPAT_META_BG,
    INCOMPAT_MMP,
    INCOMPAT_NAMES,
    INCOMPAT_RECOVER,
    RO_COMPAT_BIGALLOC,
    RO_COMPAT_DIR_NLINK,
    RO_COMPAT_EXTRA_ISIZE,
    RO_COMPAT_GDT_CSUM,
    RO_COMPAT_HAS_SNAPSHOT,
    RO_COMPAT_HUGE_FILE,
    RO_COMPAT_METADATA_CSUM,
    RO_COMPAT_ORPHAN_PRESENT,
    RO_COMPAT_PROJECT,
    RO_COMPAT_QUOTA,
    RO_COMPAT_READONLY,
    RO_COMPAT_REPLICA,
    RO_COMPAT_SHARED_BLOCKS,
    RO_COMPAT_SPARSE_SUPER,
    RO_COMPAT_VERITY,
    S_CHECKSUM_OFFSET,
    SUPERBLOCK_OFFSET,
    SUPERBLOCK_SIZE,
    ext4_super_block,
    unpack_group_desc,
)

if TYPE_CHECKING:
    from ...block.blkdev import BlockDevice
    from ...block.buffer import BlockCache, Buffer, BufferCache

log = logging.getLogger(__name__)

_SUPPORTED_INCOMPAT = (INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS
                       | INCOMPAT_64BIT | INCOMPAT_MMP | INCOMPAT_FLEX_BG | INCOMPAT_EA_INODE
                       | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR | INCOMPAT_INLINE_DATA
                       | INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD)
_EXT4_ONLY_INCOMPAT = (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_META_BG
                       | INCOMPAT_EA_INODE | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR
                       | INCOMPAT_INLINE_DATA | INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD | INCOMPAT_MMP)
_EXT4_ONLY_RO = (RO_COMPAT_HUGE_FILE | RO_COMPAT_GDT_CSUM | RO_COMPAT_DIR_NLINK
                 | RO_COMPAT_EXTRA_ISIZE | RO_COMPAT_BIGALLOC | RO_COMPAT_METADATA_CSUM)
_IGNORED_OPTIONS = {"ro", "rw", "acl", "user_xattr", "nouser_xattr", "barrier", "nobarrier",
                    "noatime", "relatime", "strictatime", "nodiratime", "delalloc", "nodelalloc",
                    "journal_checksum", "nojournal_checksum", "auto_da_alloc", "noauto_da_alloc",
                    "discard", "nodiscard", "block_validity", "noblock_validity", "lazytime",
                    "nolazytime", "dioread_lock", "dioread_nolock", "i_version", "nogrpid",
                    "grpid", "bsdgroups", "sysvgroups", "quota", "noquota", "usrquota",
                    "grpquota", "prjquota", "nouid32", "debug", "init_itable", "noinit_itable",
                    "journal_async_commit", "nombcache", "no_mbcache"}
_IGNORED_PREFIXES = ("errors=", "data=", "commit=", "barrier=", "inode_readahead_blks=",
                     "journal_ioprio=", "stripe=", "max_batch_time=", "min_batch_time=",
                     "resuid=", "resgid=", "init_itable=", "max_dir_size_kb=", "data_err=")
_KNOWN_RO_COMPAT = 0x1FFFF & ~0x0004  # everything but btree_dir
_INODE_READAHEAD = 16
_DIRTY_INODES_BATCH = 256  # changed inodes kept in memory before they are stored
_DATA_BATCH_BYTES = 8 << 20  # file data queued before it is written
_DATA_BATCH_WRITES = 512  # inode table blocks read on a miss (inode_readahead_blks)

# one group descriptor, reduced to what the driver uses
GroupDesc = tuple[int, int, int, int, int, int, int, int]
# (block_bitmap, inode_bitmap, inode_table, flags, itable_unused, free_blocks,
#  free_inodes, bitmap checksums: block | inode << 32)

# from i_generation (0x64): it, l_i_checksum_lo (0x7C), i_extra_isize and i_checksum_hi
_CSUM_FIELDS = struct.Struct("<I20xH2xHH")
_CSUM_FIELDS_OLD = struct.Struct("<I20xH")  # a 128-byte inode: no extra fields


class _Transaction:
    """One operation's changes (the context ``Ext4Super.transaction`` returns; nests):
    when the outermost ends, the superblock stores and commits what piled up."""

    __slots__ = ("sb",)

    def __init__(self, sb: Ext4Super) -> None:
        self.sb = sb

    def __enter__(self) -> None:
        self.sb._depth += 1

    def __exit__(self, *exc: object) -> None:
        sb = self.sb
        sb._depth -= 1
        if not sb._depth:
            sb._end_transaction()


class Ext4Super(SuperBlock):
    """A mounted ext2/3/4 filesystem (read-only for now)."""

    fstype = "ext4"
    magic = EXT4_SUPER_MAGIC

    def __init__(self, kernel: object, bdev: BlockDevice, flags: int, options: str) -> None:
        super().__init__(kernel, bdev, flags)
        self._cache: BufferCache = kernel.bcache  # type: ignore[attr-defined]
        self.bcache: BlockCache = self._cache  # a JournalingCache over it once journaling
        self.io: BlockDevice = bdev  # where every read goes (an overlay after replay)
        self.noload = False
        self._parse_options(options)
        self.rdonly = bool(flags & MS_RDONLY)
        if not self.rdonly and bdev.ro:
            raise kerr(errno.EROFS, "ext4", "the device is read-only")
        self.recovery: RecoveryInfo | None = None
        self.alloc: Allocator = None  # type: ignore[assignment]  # read-write mounts only
        self._dirty: dict[int, Ext4Inode] = {}
        self._orphans: dict[int, Ext4Inode] = {}
        self._orphan_prev: dict[int, int] = {}  # orphan -> the orphan whose next it is
        self.last_orphan = 0  # head of the on-disk orphan list (s_last_orphan)
        self.super_dirty = False
        self._depth = 0
        self._txn = _Transaction(self)
        self.journal: JournalWriter | None = None  # read-write mounts with a journal
        # file data waiting to be written in one batch: (device offset, whole blocks)
        self._data: list[tuple[int, list[memoryview]]] = []
        self._data_blocks: set[int] = set()  # blocks of the queue's other writes
        self._data_fresh: set[int] = set()  # inodes with fresh blocks in the queue
        self._data_bytes = 0
        self._load_super(bdev.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE))
        if not self.rdonly:
            self._check_writable()
        self._load_groups()
        if self.incompat & INCOMPAT_RECOVER:
            self._recover()
        self.root = self.get_inode(EXT4_ROOT_INO)
        if not self.root.is_dir:
            raise corrupted("ext4 root inode", "is not a directory")
        if self.rdonly:
            self._check_orphans()
        else:
            self._start_writing()

    # -- mount steps -------------------------------------------------------------------------
    def _parse_options(self, options: str) -> None:
        for opt in filter(None, (o.strip() for o in options.split(","))):
            if opt in ("noload", "norecovery"):
                self.noload = True
            elif opt == "noacl":
                self.posix_acl = False
            elif opt in _IGNORED_OPTIONS or opt.startswith(_IGNORED_PREFIXES):
                continue
            else:
                raise kerr(errno.EINVAL, "ext4", f"unknown or unsupported mount option {opt!r}")

    def _load_super(self, raw: bytes | bytearray) -> None:
        """Parse and validate the primary superblock; EUCLEAN/EBADMSG/EOPNOTSUPP/EINVAL."""
        es = ext4_super_block.unpack_from(raw, 0)
        what = "ext4 superblock"
        if es.s_magic != EXT4_SUPER_MAGIC:
            raise kerr(errno.EINVAL, what, "no ext2/ext3/ext4 superblock (bad magic)")
        if es.s_rev_level > EXT4_DYNAMIC_REV:
            raise kerr(errno.EOPNOTSUPP, what, f"revision {es.s_rev_level} is not supported")
        dynamic = es.s_rev_level != EXT4_GOOD_OLD_REV
        compat = es.s_feature_compat if dynamic else 0
        incompat = es.s_feature_incompat if dynamic else 0
        ro_compat = es.s_feature_ro_compat if dynamic else 0
        self.compat, self.incompat, self.ro_compat = compat, incompat, ro_compat
        self.metadata_csum = bool(ro_compat & RO_COMPAT_METADATA_CSUM)
        if self.metadata_csum:
            if es.s_checksum_type != EXT4_CRC32C_CHKSUM:
                raise corrupted(what, f"unknown checksum type {es.s_checksum_type}")
            if ck.superblock_csum(raw) != es.s_checksum:
                raise corrupted(what, "checksum mismatch", EFSBADCRC)
        unknown = incompat & ~_SUPPORTED_INCOMPAT
        if unknown:
            names = [n for bit, n in INCOMPAT_NAMES.items() if unknown & bit] or [hex(unknown)]
            raise kerr(errno.EOPNOTSUPP, what, "unsupported feature(s): " + ", ".join(names))
        if incompat & INCOMPAT_JOURNAL_DEV or incompat & (INCOMPAT_COMPRESSION | INCOMPAT_DIRDATA):
            raise kerr(errno.EOPNOTSUPP, what, "an external journal device cannot be mounted")
        if es.s_log_block_size > EXT4_MAX_BLOCK_LOG_SIZE - EXT4_MIN_BLOCK_LOG_SIZE:
            raise corrupted(what, f"invalid block size log {es.s_log_block_size}")
        bs = 1024 << es.s_log_block_size
        self.blocksize = bs
        self.bigalloc = bool(ro_compat & RO_COMPAT_BIGALLOC)
        if self.bigalloc:
            if es.s_log_cluster_size < es.s_log_block_size or es.s_log_cluster_size > 30 - 10:
                raise corrupted(what, f"invalid cluster size log {es.s_log_cluster_size}")
            self.cluster_size = 1024 << es.s_log_cluster_size
        else:
            self.cluster_size = bs
        self.cluster_ratio = self.cluster_size // bs
        self.has_64bit = bool(incompat & INCOMPAT_64BIT)
        blocks = es.s_blocks_count_lo | ((es.s_blocks_count_hi << 32) if self.has_64bit else 0)
        self.blocks_count = blocks
        self.r_blocks_count = es.s_r_blocks_count_lo | (
            (es.s_r_blocks_count_hi << 32) if self.has_64bit else 0)
        self.first_data_block = es.s_first_data_block
        bpg, ipg = es.s_blocks_per_group, es.s_inodes_per_group
        cpg = es.s_clusters_per_group if self.bigalloc else bpg
        if self.bigalloc and bpg != cpg * self.cluster_ratio:
            raise corrupted(what, f"blocks per group {bpg} != clusters per group {cpg} x "
                            f"{self.cluster_ratio}")
        if not 0 < cpg <= bs * 8 or not 0 < ipg <= bs * 8:
            raise corrupted(what, f"bad group geometry: {cpg} clusters, {ipg} inodes per group")
        if self.first_data_block != (1 if bs == 1024 and not self.bigalloc else 0):
            raise corrupted(what, f"bad first data block {self.first_data_block}")
        if blocks <= self.first_data_block:
            raise corrupted(what, f"bad block count {blocks}")
        if dynamic:
            isize, first_ino = es.s_inode_size, es.s_first_ino
            if isize < EXT4_GOOD_OLD_INODE_SIZE or isize > bs or isize & (isize - 1):
                raise corrupted(what, f"bad inode size {isize}")
            if first_ino < EXT4_GOOD_OLD_FIRST_INO:
                raise corrupted(what, f"bad first inode {first_ino}")
        else:
            isize, first_ino = EXT4_GOOD_OLD_INODE_SIZE, EXT4_GOOD_OLD_FIRST_INO
        self.inode_size, self.first_ino = isize, first_ino
        if self.has_64bit:
            ds = es.s_desc_size
            if ds < EXT4_MIN_DESC_SIZE_64BIT or ds > EXT4_MAX_DESC_SIZE or ds & (ds - 1):
                raise corrupted(what, f"bad group descriptor size {ds}")
        else:
            ds = EXT4_MIN_DESC_SIZE
        self.desc_size = ds
        self.blocks_per_group, self.clusters_per_group, self.inodes_per_group = bpg, cpg, ipg
        ngroups = (blocks - self.first_data_block + bpg - 1) // bpg
        self.group_count = ngroups
        if es.s_inodes_count != ngroups * ipg:
            raise corrupted(what, f"inode count {es.s_inodes_count} != {ngroups} groups x {ipg}")
        self.inodes_count = es.s_inodes_count
        self.inode_table_blocks = (ipg * isize + bs - 1) // bs
        dev_size = self.bdev.size if self.bdev is not None else 0
        if blocks * bs > dev_size:
            raise kerr(errno.EIO, what, f"the filesystem has {blocks} blocks of {bs} bytes but "
                       f"the device holds only {dev_size} bytes (truncated image?)")
        self.es = es
        self.uuid = es.s_uuid
        self.csum_seed = 0
        if self.metadata_csum:
            self.csum_seed = es.s_checksum_seed if incompat & INCOMPAT_CSUM_SEED \
                else ck.fs_seed(es.s_uuid)
        self.gdt_csum = bool(ro_compat & RO_COMPAT_GDT_CSUM) or self.metadata_csum
        self.filetype = bool(incompat & INCOMPAT_FILETYPE)
        self.dir_index = bool(compat & COMPAT_DIR_INDEX)
        self.large_dir = bool(incompat & INCOMPAT_LARGEDIR)
        self.huge_file = bool(ro_compat & RO_COMPAT_HUGE_FILE)
        self.ea_inode_feature = bool(incompat & INCOMPAT_EA_INODE)
        self.has_journal = bool(compat & COMPAT_HAS_JOURNAL)
        seed = struct.unpack("<4I", es.s_hash_seed)
        self.hash_seed = seed if any(seed) else None
        self.def_hash_version = es.s_def_hash_version
        self.unsigned_hash = bool(es.s_flags & EXT2_FLAGS_UNSIGNED_HASH)
        self.max_links = 65000  # EXT4_LINK_MAX
        # s_maxbytes (ext4_max_size): extent files address 2^32 - 1 blocks; indirect maps
        # and 32-bit i_blocks limit the others
        per = bs // 4
        self.maxbytes_indirect = min((12 + per + per ** 2 + per ** 3) * bs,
                                     ((1 << 48) - 1) * 512 if self.huge_file else (1 << 41) - 1)
        self.maxbytes = min(((1 << 32) - 1) * bs if incompat & INCOMPAT_EXTENTS
                            else self.maxbytes_indirect, (1 << 63) - 1)
        self.time_gran = 1 if isize > EXT4_GOOD_OLD_INODE_SIZE else 1_000_000_000
        if incompat & _EXT4_ONLY_INCOMPAT or ro_compat & _EXT4_ONLY_RO:
            self.fstype = "ext4"
        elif self.has_journal:
            self.fstype = "ext3"
        else:
            self.fstype = "ext2"

    # -- group descriptors ----------------------------------------------------------------------
    def bg_has_super(self, group: int) -> bool:
        """Does ``group`` hold a superblock backup (sparse_super, sparse_super2)?"""
        if group == 0:
            return True
        if self.compat & COMPAT_SPARSE_SUPER2:
            backups = struct.unpack("<2I", self.es.s_backup_bgs)
            return group in backups
        if group <= 1 or not self.ro_compat & RO_COMPAT_SPARSE_SUPER:
            return True
        if not group & 1:
            return False
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    def group_first_block(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def descriptor_block(self, nr: int) -> int:
        """Where descriptor block ``nr`` lives (meta_bg moves them into their groups)."""
        first_meta_bg = self.es.s_first_meta_bg
        sb_block = 1 if self.blocksize == 1024 else 0  # the block holding byte 1024
        if not self.incompat & INCOMPAT_META_BG or nr < first_meta_bg:
            return sb_block + nr + 1
        bg = (self.blocksize // self.desc_size) * nr
        has_super = 1 if self.bg_has_super(bg) else 0
        if self.blocksize == 1024 and nr == 0 and self.first_data_block == 0:
            has_super += 1
        return self.group_first_block(bg) + has_super

    def _load_groups(self) -> None:
        """Read every group descriptor; verify checksums and table locations."""
        bs, ds = self.blocksize, self.desc_size
        per_block = bs // ds
        nblocks = (self.group_count + per_block - 1) // per_block
        if self.incompat & INCOMPAT_META_BG and self.es.s_first_meta_bg > nblocks:
            raise corrupted("ext4 superblock", f"first_meta_bg {self.es.s_first_meta_bg} too large")
        groups: list[GroupDesc] = []
        first, limit = self.first_data_block, self.blocks_count
        itb = self.inode_table_blocks
        for nr in range(nblocks):
            blk = self.descriptor_block(nr)
            if not first <= blk < limit:
                raise corrupted("ext4 group descriptors", f"descriptor block {blk} out of range")
            data = bytes(self.bread(blk).data)
            for i in range(min(per_block, self.group_count - nr * per_block)):
                g = nr * per_block + i
                off = i * ds
                desc = data[off:off + ds]
                bb, ib, it, fb, fi, _dirs, flags, unused, bcs, ics, stored = \
                    unpack_group_desc(desc, 0, ds)
                if self.gdt_csum:
                    calc = ck.group_desc_csum(self.metadata_csum, self.csum_seed, self.uuid, g,
                                              desc)
                    if calc != stored:
                        raise corrupted(f"ext4 group descriptor {g} (block {blk})",
                                        "checksum mismatch", EFSBADCRC)
                for name, b, n in (("block bitmap", bb, 1), ("inode bitmap", ib, 1),
                                   ("inode table", it, itb)):
                    if not first <= b or b + n > limit:
                        raise corrupted(f"ext4 group descriptor {g} (block {blk})",
                                        f"{name} at block {b} is outside the filesystem")
                groups.append((bb, ib, it, flags, unused, fb, fi, bcs | ics << 32))
        self.groups = groups

    # -- journal ----------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Replay the journal: into an overlay (read-only; the image is never written) or
        onto the device (read-write), then mark the journal empty."""
        what = "ext4 journal"
        if not self.has_journal:
            raise corrupted("ext4 superblock", "needs_recovery set without a journal")
        if self.noload:
            log.warning("%s: needs recovery, but mounted with noload: the journal is ignored",
                        self.bdev.name if self.bdev else "ext4")
            return
        jino = self.es.s_journal_inum
        if not jino:
            raise kerr(errno.EOPNOTSUPP, what, "recovery from an external journal device is not "
                       "supported")
        journal = Journal(self._load_inode(jino), self.io)
        if journal.fast_commit:
            raise kerr(errno.EOPNOTSUPP, what, "replay of fast-commit journals is not supported")
        if not self.rdonly:
            self._recover_to_disk(journal)
            return
        base = self.io
        overlay = OverlayDevice(base, self.blocksize)
        bs = self.blocksize

        def write(blocknr: int, data: bytes) -> None:
            overlay.writev(blocknr * bs, [memoryview(data)])

        info = recover(journal, write, self.blocks_count)
        self.recovery = info
        log.info("%s: recovered %d transactions (%d..%d), %d blocks replayed, %d revoked, "
                 "into memory: the image is not written", base.name, info.transactions,
                 info.start_transaction, info.end_transaction, info.replayed, info.revoked)
        # everything read so far may be stale: start over on the overlay
        self.bcache.invalidate(base)
        self._icache = InodeCache()
        self.io = overlay
        self._load_super(overlay.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE))
        self._load_groups()

    def _check_orphans(self) -> None:
        """Count orphans (left for e2fsck or a read-write mount: this mount writes nothing)."""
        if self.noload:
            return
        count = len(self._orphan_list())
        if self.compat & COMPAT_ORPHAN_FILE and self.es.s_orphan_file_inum:
            count += self._orphan_file_count()
        if count:
            log.info("ext4: %d orphan inode(s) are left for a read-write mount to clean up", count)

    def _orphan_list(self) -> list[int]:
        """The inodes on the orphan list (s_last_orphan, chained through i_dtime); a damaged
        chain is cut where it goes wrong (e2fsck deals with the rest)."""
        out: list[int] = []
        seen: set[int] = set()
        ino = self.es.s_last_orphan
        while ino:
            if ino in seen or not 1 <= ino <= self.inodes_count:
                log.warning("ext4: orphan list is damaged at inode %d; the rest is ignored", ino)
                break
            seen.add(ino)
            out.append(ino)
            ino = struct.unpack_from("<I", self.read_inode_raw(ino), 0x14)[0]
        return out

    def _orphan_file_count(self) -> int:
        inode = self._load_inode(self.es.s_orphan_file_inum)
        bs = self.blocksize
        per = (bs - 8) // 4
        n = 0
        for lblk in range(inode.size // bs):
            pblk = inode.bmap(lblk)
            if not pblk:
                raise corrupted("ext4 orphan file", f"hole at block {lblk}")
            data = self.bread(pblk).data
            magic, stored = struct.unpack_from("<II", data, bs - 8)
            where = f"ext4 orphan file block {pblk}"
            if magic != EXT4_ORPHAN_BLOCK_MAGIC:
                raise corrupted(where, f"bad magic {magic:#x}")
            if self.metadata_csum and stored != ck.orphan_block_csum(
                    self.csum_seed, inode.ino, inode.generation, pblk, data, bs - 8):
                raise corrupted(where, "checksum mismatch", EFSBADCRC)
            n += sum(1 for x in struct.unpack_from(f"<{per}I", data, 0) if x)
        return n

    # -- blocks and inodes ----------------------------------------------------------------------
    def bread(self, blocknr: int) -> Buffer:
        """A metadata block through the buffer cache (EIO if unreadable)."""
        return self.bcache.bread(self.io, blocknr, self.blocksize)

    def read_inode_raw(self, ino: int) -> bytes:
        """The on-disk inode ``ino`` (``s_inode_size`` bytes), checksum verified.

        Reads a run of the inode table on a miss (inode readahead).
        EUCLEAN for an out-of-range number or an uninitialized group, EBADMSG
        for a checksum mismatch, EIO if unreadable.
        """
        return self._read_inode(ino)[0]

    def _read_inode(self, ino: int) -> tuple[bytes, int | None]:
        """The raw inode and its checksum seed (None when not computed)."""
        if not 1 <= ino <= self.inodes_count:
            raise corrupted("ext4", f"inode number {ino} out of range")
        g, idx = divmod(ino - 1, self.inodes_per_group)
        desc = self.groups[g]
        if self.gdt_csum and desc[3] & EXT4_BG_INODE_UNINIT:
            raise corrupted(f"ext4 inode {ino}", f"lies in uninitialized group {g}")
        isize, bs = self.inode_size, self.blocksize
        off = idx * isize
        blk = desc[2] + off // bs
        buf = self._itable_block(desc[2], off // bs)
        o = off % bs
        raw = bytes(buf.data[o:o + isize])
        if self.metadata_csum and self.es.s_creator_os == EXT4_OS_LINUX:
            if isize > EXT4_GOOD_OLD_INODE_SIZE:
                gen, stored, extra, hi = _CSUM_FIELDS.unpack_from(raw, 0x64)
                has_hi = extra >= 4
                if has_hi:
                    stored |= hi << 16
            else:
                gen, stored = _CSUM_FIELDS_OLD.unpack_from(raw, 0x64)
                has_hi = False
            seed = ck.inode_seed(self.csum_seed, ino, gen)
            if stored != ck.inode_csum(seed, raw, has_hi):
                raise corrupted(f"ext4 inode {ino} (block {blk})", "checksum mismatch",
                                EFSBADCRC)
            return raw, seed
        return raw, None

    def _itable_block(self, table: int, tblk: int) -> Buffer:
        """Block ``tblk`` of the inode table starting at ``table``; a miss reads a run of
        the table (inode readahead: neighbours are usually wanted next)."""
        bs = self.blocksize
        blk = table + tblk
        bc = self.bcache
        if bc.peek(self.io, blk, bs) is None:
            n = min(_INODE_READAHEAD, self.inode_table_blocks - tblk)
            return bc.bread_many(self.io, blk, n, bs)[0]
        return bc.bread(self.io, blk, bs)

    def _load_inode(self, ino: int) -> Ext4Inode:
        raw, seed = self._read_inode(ino)
        return Ext4Inode(self, ino, raw, seed)

    def get_inode(self, ino: int, referrer: tuple[int, bytes] | None = None) -> Ext4Inode:
        """The in-memory inode ``ino``; ``referrer``, (directory inode, name), is the entry
        pointing at it (then reserved inode numbers are refused, as ext4_lookup does)."""
        if referrer is not None and ino != EXT4_ROOT_INO and \
                not self.first_ino <= ino <= self.inodes_count:
            raise corrupted(f"ext4 directory inode {referrer[0]} entry {referrer[1]!r}",
                            f"bad inode number {ino}")
        inode = self.iget(ino, self._load_inode)
        return inode  # type: ignore[return-value]

    # -- read-write mounts ------------------------------------------------------------------------
    def _check_writable(self) -> None:
        """EROFS naming the feature when this driver cannot write the filesystem safely."""
        unsafe = {INCOMPAT_EA_INODE: "ea_inode", INCOMPAT_MMP: "mmp"}
        ro_unsafe = {RO_COMPAT_BIGALLOC: "bigalloc", RO_COMPAT_QUOTA: "quota",
                     RO_COMPAT_PROJECT: "project", RO_COMPAT_READONLY: "read-only",
                     RO_COMPAT_SHARED_BLOCKS: "shared_blocks", RO_COMPAT_HAS_SNAPSHOT: "snapshot",
                     RO_COMPAT_REPLICA: "replica",
                     RO_COMPAT_VERITY: "verity"}
        names = [n for bit, n in unsafe.items() if self.incompat & bit]
        names += [n for bit, n in ro_unsafe.items() if self.ro_compat & bit]
        unknown = self.ro_compat & ~_KNOWN_RO_COMPAT
        if unknown:
            names.append(f"unknown ro_compat {unknown:#x}")
        if self.compat & COMPAT_FAST_COMMIT:
            names.append("fast_commit")
        if names:
            raise kerr(errno.EROFS, "ext4", "read-write mounts are not supported with "
                       + ", ".join(names) + " (mount read-only)")
        if self.es.s_state & EXT4_ERROR_FS:
            log.warning("ext4: the filesystem has errors recorded; run e2fsck")

    def _recover_to_disk(self, journal: Journal) -> None:
        bs = self.blocksize
        dev = self.io

        def write(blocknr: int, data: bytes) -> None:
            self.bcache.forget(dev, blocknr, bs)
            dev.write(blocknr * bs, data)

        info = recover(journal, write, self.blocks_count)
        self.recovery = info
        dev.flush()
        # the journal is empty now: s_start 0, the next transaction id after the replayed ones
        jsb = bytearray(journal.read(0))
        struct.pack_into(">II", jsb, 24, info.end_transaction & 0xFFFFFFFF, 0)
        if journal.csum:
            struct.pack_into(">I", jsb, JSB_CHECKSUM_OFFSET, 0)
            struct.pack_into(">I", jsb, JSB_CHECKSUM_OFFSET,
                             crc32c_raw(0xFFFFFFFF, bytes(jsb[:1024])))
        pblk, _n = journal._pblk(0)
        dev.write(pblk * bs, jsb)
        dev.flush()
        log.info("%s: recovered %d transactions, %d blocks replayed, %d revoked",
                 dev.name, info.transactions, info.replayed, info.revoked)
        self.bcache.invalidate(dev)
        self._icache = InodeCache()
        self._load_super(dev.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE))
        self.incompat &= ~INCOMPAT_RECOVER
        self._load_groups()

    def _sb_buffer(self) -> tuple[Buffer, int]:
        bs = self.blocksize
        return self.bread(SUPERBLOCK_OFFSET // bs), SUPERBLOCK_OFFSET % bs

    def write_super(self, valid: bool) -> None:
        """Store the superblock: free counts, state, times, features, checksum."""
        buf, off = self._sb_buffer()
        raw = buf.data
        es = ext4_super_block
        a = self.alloc
        free_blocks = a.free_clusters * self.cluster_ratio
        now = self.kernel.clock() // 1_000_000_000  # type: ignore[attr-defined]
        es.set(raw, off, "s_free_blocks_count_lo", free_blocks & 0xFFFFFFFF)
        if self.has_64bit:
            es.set(raw, off, "s_free_blocks_count_hi", free_blocks >> 32)
        es.set(raw, off, "s_free_inodes_count", a.free_inodes)
        state = es.get(raw, off, "s_state")
        state = state | EXT4_VALID_FS if valid else state & ~EXT4_VALID_FS
        es.set(raw, off, "s_state", state)
        es.set(raw, off, "s_wtime", now & 0xFFFFFFFF)
        es.set(raw, off, "s_wtime_hi", (now >> 32) & 0xFF)
        es.set(raw, off, "s_feature_incompat", self.incompat)
        es.set(raw, off, "s_feature_ro_compat", self.ro_compat)
        es.set(raw, off, "s_last_orphan", self.last_orphan)
        if self.metadata_csum:
            struct.pack_into("<I", raw, off + S_CHECKSUM_OFFSET,
                             ck.superblock_csum(memoryview(raw)[off:off + SUPERBLOCK_SIZE]))
        self.bcache.mark_dirty(buf)

    def _start_writing(self) -> None:
        """Make the mount writable: allocator, orphan cleanup, superblock marked in use."""
        assert self.bdev is not None
        self.io = self.bdev
        self.alloc = Allocator(self)
        self.dir_nlink = bool(self.ro_compat & RO_COMPAT_DIR_NLINK)
        with self.transaction():
            self._cleanup_orphans()
        self.bcache.sync(self.io)
        if self.has_journal and self.es.s_journal_inum and not self.noload:
            journal = Journal(self._load_inode(self.es.s_journal_inum), self.io)
            if journal.start:
                raise corrupted("ext4 journal", "not empty after recovery")
            self.journal = JournalWriter(journal, self.io, self._cache, journal.sb.s_uuid)
            self.journal.set_features(self.has_64bit, self.metadata_csum)
            self.bcache = JournalingCache(self._cache, self.journal)
            self.alloc.defer = True
            self.incompat |= INCOMPAT_RECOVER  # needs_recovery while mounted, as Linux sets
        buf, off = self._sb_buffer()
        es = ext4_super_block
        now = self.kernel.clock() // 1_000_000_000  # type: ignore[attr-defined]
        es.set(buf.data, off, "s_mnt_count", (es.get(buf.data, off, "s_mnt_count") + 1) & 0xFFFF)
        es.set(buf.data, off, "s_mtime", now & 0xFFFFFFFF)
        es.set(buf.data, off, "s_mtime_hi", (now >> 32) & 0xFF)
        # journaled: valid, and replay restores consistency after a crash; without a journal:
        # not clean while mounted, so a crash sends e2fsck over everything
        self.write_super(valid=self.journal is not None)
        self._cache.sync(self.io)

    def _cleanup_orphans(self) -> None:
        """Finish what a crash interrupted: free unlinked inodes, cut truncated ones."""
        if self.noload:
            return
        todo = self._orphan_list() + self._drain_orphan_file()
        for ino in todo:
            raw = self.read_inode_raw(ino)
            links = struct.unpack_from("<H", raw, 0x1A)[0]
            if links:
                inode = self.get_inode(ino)
                inode.orphan_next = 0
                bs = self.blocksize
                end = f.map_end(inode)
                if inode.is_reg and end * bs > inode.size:  # a truncate the crash cut short
                    f.punch(inode, (inode.size + bs - 1) // bs, end)
                self.dirty_inode(inode)
            else:
                try:
                    tmp = bytearray(raw)  # the constructor refuses unlinked inodes
                    struct.pack_into("<H", tmp, 0x1A, 1)
                    inode = Ext4Inode(self, ino, bytes(tmp))
                except OSError as e:
                    log.warning("ext4: orphan inode %d is damaged (%s); left for e2fsck", ino, e)
                    break
                inode.raw = raw
                inode.nlink = 0
                w.evict(inode)
        if todo:
            log.info("ext4: cleaned up %d orphan inode(s)", len(todo))

    def _drain_orphan_file(self) -> list[int]:
        """Take every inode number out of the orphan file (emptying its slots)."""
        if not (self.compat & COMPAT_ORPHAN_FILE and self.es.s_orphan_file_inum):
            return []
        inode = self._load_inode(self.es.s_orphan_file_inum)
        bs = self.blocksize
        per = (bs - 8) // 4
        out: list[int] = []
        self._orphan_file_count()  # verifies every block
        for lblk in range(inode.size // bs):
            pblk = inode.bmap(lblk)
            buf = self.bread(pblk)
            data = buf.data
            entries = struct.unpack_from(f"<{per}I", data, 0)
            live = [x for x in entries if x]
            if not live:
                continue
            out += [x for x in live if 1 <= x <= self.inodes_count]
            data[:per * 4] = bytes(per * 4)
            if self.metadata_csum:
                struct.pack_into("<I", data, bs - 4, ck.orphan_block_csum(
                    self.csum_seed, inode.ino, inode.generation, pblk, data, bs - 8))
            self.bcache.mark_dirty(buf)
        self.ro_compat &= ~RO_COMPAT_ORPHAN_PRESENT
        return out

    # -- batched file data ------------------------------------------------------------------
    def queue_data(self, ino: int, offset: int, parts: list[memoryview], fresh: bool) -> None:
        """Write file data of inode ``ino`` soon, batched with other small writes (ordered
        before any commit, sync, read of file data or freeing of blocks). ``parts`` are
        whole blocks, each a multiple of the block size, and must not change until then.

        One batch never writes a block twice (its writes may complete in any order).
        ``fresh``: the blocks were allocated just now, so none of them can be queued (a
        block is freed only after the queue is written): only the inode is noted. Other
        writes are checked block by block, and against the inode's fresh blocks."""
        size = sum(len(p) for p in parts)
        if fresh:
            self._data_fresh.add(ino)
        else:
            bs = self.blocksize
            blocks = range(offset // bs, (offset + size) // bs)
            if ino in self._data_fresh or not self._data_blocks.isdisjoint(blocks):
                self.flush_data()
            self._data_blocks.update(blocks)
        self._data.append((offset, parts))
        self._data_bytes += size
        if self._data_bytes >= _DATA_BATCH_BYTES or len(self._data) >= _DATA_BATCH_WRITES:
            self.flush_data()

    def flush_data(self) -> None:
        if self._data:
            writes = self._data
            self._data, self._data_bytes = [], 0
            self._data_blocks = set()
            self._data_fresh = set()
            self.io.write_many(writes, wait=False)  # in order before what follows

    def dirty_inode(self, inode: Ext4Inode) -> None:
        """Note a changed inode: it is stored when the transaction ends."""
        self._dirty[inode.ino] = inode
        if not self._depth:
            self._end_transaction()

    def forget_dirty(self, inode: Ext4Inode) -> None:
        self._dirty.pop(inode.ino, None)

    def orphan_add(self, inode: Ext4Inode) -> None:
        """An inode lost its last link: keep it until its last user lets go, on the orphan
        list (s_last_orphan, chained through i_dtime) so that a crash meanwhile leaves
        e2fsck and the next mount a list of inodes to free."""
        if inode.ino in self._orphans:
            return
        self._orphans[inode.ino] = inode
        inode.orphan_next = self.last_orphan
        if self.last_orphan:
            self._orphan_prev[self.last_orphan] = inode.ino
        self.last_orphan = inode.ino
        self.dirty_inode(inode)
        self.super_dirty = True

    def orphan_del(self, inode: Ext4Inode) -> None:
        """Take an inode off the orphan list (its links are back, or it is freed); the
        one before it in the chain is found at once (files closed in the order they were
        unlinked would otherwise each walk the list)."""
        if self._orphans.pop(inode.ino, None) is None:
            return
        nxt = inode.orphan_next
        prev = self._orphan_prev.pop(inode.ino, 0)
        if self.last_orphan == inode.ino:
            self.last_orphan = nxt
            self.super_dirty = True
            if nxt:
                self._orphan_prev.pop(nxt, None)
        elif prev:
            other = self._orphans[prev]
            other.orphan_next = nxt
            self.dirty_inode(other)
            if nxt:
                self._orphan_prev[nxt] = prev
        inode.orphan_next = 0

    def write_inode_raw(self, ino: int, raw: bytes) -> None:
        g, idx = divmod(ino - 1, self.inodes_per_group)
        isize, bs = self.inode_size, self.blocksize
        off = idx * isize
        buf = self._itable_block(self.groups[g][2], off // bs)
        o = off % bs
        buf.data[o:o + isize] = raw
        self.bcache.mark_dirty(buf)

    def transaction(self) -> contextlib.AbstractContextManager[object]:
        if self.rdonly:
            return contextlib.nullcontext()
        return self._txn

    def _end_transaction(self) -> None:
        """Between two system calls: store what piled up, commit when it is time.

        Changed inodes are encoded into the inode table in batches (at a commit,
        a sync, or when many are waiting), not after every call: a file copied
        in takes one store, not one per chmod, utimes and write.
        """
        if len(self._dirty) >= _DIRTY_INODES_BATCH:
            self._store_dirty()
        j = self.journal
        if j is not None and not self._depth and j.should_commit(
                len(j.running) + len(self._dirty), self._cache.budget // self.blocksize):
            self._commit()

    def _store_dirty(self) -> None:
        if self.super_dirty and self.journal is not None:
            self.super_dirty = False
            self.write_super(valid=True)
        while self._dirty:
            dirty = list(self._dirty.values())
            self._dirty.clear()
            for i, inode in enumerate(dirty):
                try:
                    w.store_inode(inode)
                except BaseException:  # those not stored stay dirty: nothing is forgotten
                    for rest in dirty[i:]:
                        self._dirty.setdefault(rest.ino, rest)
                    raise
        self.alloc.commit()

    def _changed(self) -> bool:
        """Anything not yet on the image (or in a committed transaction)?"""
        if self._dirty or self._data or self.alloc.pending or self.alloc.dirty or self.super_dirty:
            return True
        if self.journal is not None:  # dirty buffers it committed are as good as written
            return bool(self.journal.running)
        return bool(self._cache.dirty_buffers(self.io))

    def _commit(self) -> None:
        """Close the running transaction: deferred frees, counts, then jbd2 commit."""
        assert self.journal is not None
        self._store_dirty()
        self.flush_data()  # ordered mode: data before the metadata that points to it
        self.alloc.apply_pending()
        self.alloc.commit()
        self.write_super(valid=True)
        self.journal.commit()

    def sync(self) -> None:
        if self.rdonly:
            return
        if self._changed():
            if self.journal is not None:
                self._commit()
            else:
                self._store_dirty()
                self.flush_data()
                self.write_super(valid=False)
                self.bcache.sync(self.io)
        self.io.drain()  # what was issued behind (data, commits) is done and durable

    def reclaim(self) -> bool:
        # blocks the running transaction freed are reused only after it commits (else a
        # crash before the commit would give the file it deletes another file's data)
        if self.journal is None or self._depth or not self.alloc.pending:
            return False
        self._commit()
        return True

    def write_inode(self, inode: object) -> None:
        if not self.rdonly:
            self.dirty_inode(inode)  # type: ignore[arg-type]

    # -- operations -------------------------------------------------------------------------------
    def statfs(self) -> StatFs:
        es = self.es
        ratio = self.cluster_ratio
        a = self.alloc
        if a is not None:  # live counts: blocks the running transaction freed count as
            # free, those held back for storing block maps as used (Linux's dirty clusters)
            free_clusters = max(a.free_clusters + sum(n for _b, n in a.pending) - a.owed, 0)
            free_inodes = a.free_inodes
        else:
            free_clusters = sum(g[5] for g in self.groups)
            free_inodes = sum(g[6] for g in self.groups)
        overhead = self.overhead_blocks()
        bfree = free_clusters * ratio
        resv = 0
        if self.incompat & INCOMPAT_EXTENTS:
            resv = min((self.blocks_count // ratio) // 50, 4096) * ratio
        bavail = max(bfree - (self.r_blocks_count + resv), 0)
        u = es.s_uuid
        fsid = int.from_bytes(u[:8], "little") ^ int.from_bytes(u[8:], "little")
        return StatFs(EXT4_SUPER_MAGIC, self.blocksize, self.blocks_count - overhead, bfree,
                      bavail, self.inodes_count, free_inodes, f_fsid=fsid, f_namelen=255)

    def overhead_blocks(self) -> int:
        """Blocks holding metadata (s_overhead_clusters, or counted as ext4 does)."""
        ratio = self.cluster_ratio
        if self.es.s_overhead_clusters:
            return self.es.s_overhead_clusters * ratio
        per_block = self.blocksize // self.desc_size
        gdb = (self.group_count + per_block - 1) // per_block
        meta = self.incompat & INCOMPAT_META_BG
        first_meta = self.es.s_first_meta_bg * per_block if meta else self.group_count
        total = self.first_data_block
        for g in range(self.group_count):
            has = self.bg_has_super(g)
            if g < first_meta:
                if has:
                    total += 1 + (self.es.s_first_meta_bg if meta else gdb) \
                        + self.es.s_reserved_gdt_blocks
            else:
                total += 1 if has else 0
                mg_first = g - g % per_block
                if g in (mg_first, mg_first + 1, mg_first + per_block - 1):
                    total += 1
        total += self.group_count * (2 + self.inode_table_blocks)
        if self.has_journal and self.es.s_journal_inum:
            try:
                j = self.get_inode(self.es.s_journal_inum)
                total += j.size // self.blocksize
            except OSError:
                pass
        if ratio > 1:
            total = (total + ratio - 1) // ratio * ratio
        return total

    def remount(self, flags: int, options: str) -> None:
        if not flags & MS_RDONLY and self.rdonly:
            if self.io is not self.bdev or self.recovery is not None and self.alloc is None:
                raise kerr(errno.EROFS, "ext4", "recovered into memory: remount read-write is "
                           "not possible (unmount and mount read-write)")
            if self.bdev.ro:
                raise kerr(errno.EROFS, "ext4", "the device is read-only")
            self._check_writable()
            self.rdonly = False
            self._start_writing()
        elif flags & MS_RDONLY and not self.rdonly:
            self._finish_writing()
            self.rdonly = True
        self.flags = flags

    def _finish_writing(self) -> None:
        for inode in list(self._orphans.values()):
            with self.transaction():
                inode.nlink = 0
                w.evict(inode)
        self._orphans.clear()
        self._orphan_prev.clear()
        self._store_dirty()
        self.flush_data()
        if self.journal is not None:
            self._commit()
            self.journal.checkpoint()  # the log is empty afterwards
            self.incompat &= ~INCOMPAT_RECOVER
            self.bcache = self._cache
            self.journal = None
            self.alloc.defer = False
        self.write_super(valid=True)
        self.bcache.sync(self.io)
        self.io.drain()

    def put_super(self) -> None:
        if not self.rdonly:
            self._finish_writing()
            self.rdonly = True
        self.bcache.invalidate(self.io)
        if self.io is not self.bdev and self.bdev is not None:
            self.bcache.invalidate(self.bdev)

    def show_options(self) -> str:
        return "ro" if self.rdonly else "rw"


def mount(kernel: object, bdev: BlockDevice | None, flags: int, options: str) -> SuperBlock:
    """``Ext4Type.mount`` (the type itself is in the package, light to import)."""
    if bdev is None:
        raise kerr(errno.ENOTBLK, "ext4")
    return Ext4Super(kernel, bdev, flags, options)
