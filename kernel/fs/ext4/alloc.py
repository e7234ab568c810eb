"""Block and inode allocation (fs/ext4/balloc.c, ialloc.c, mballoc.c's role, write side).

The allocator owns, for a read-write mount, every group's descriptor fields,
its block (cluster) and inode bitmaps, and the superblock's free counts. It
holds the buffers it changes, so they stay in the buffer cache, and at the
end of each transaction (``commit``) it stores the changed descriptors with
their bitmap and descriptor checksums.

Policies, as Linux's:

* blocks: the first free run at or after a goal (the block after the file's
  previous extent, or the inode's group), preferring a run long enough for
  the whole request so large files get one extent;
* inodes: a new directory goes to a group with above-average free inodes and
  blocks and the fewest directories (Orlov's spreading); anything else goes
  to its parent's group, then the next groups with free inodes;
* groups still marked BLOCK_UNINIT or INODE_UNINIT get their bitmap built
  when first touched, exactly as e2fsck expects it (metadata blocks and the
  bitmap's padding set); an inode table that was never zeroed is zeroed
  before its inodes are handed out.
"""

from __future__ import annotations

import errno
import re
import struct
from collections.abc import Callable
from itertools import chain
from typing import TYPE_CHECKING

from ...errors import corrupted, kerr
from . import csum as ck
from .balloc import read_block_bitmap
from .ialloc import read_inode_bitmap
from .ondisk import (
    BG_BLOCK_BITMAP_CSUM_HI_END,
    BG_CHECKSUM_OFFSET,
    BG_INODE_BITMAP_CSUM_HI_END,
    EXT4_BG_BLOCK_UNINIT,
    EXT4_BG_INODE_UNINIT,
    EXT4_BG_INODE_ZEROED,
    INCOMPAT_FLEX_BG,
    INCOMPAT_META_BG,
    unpack_group_desc,
)

if TYPE_CHECKING:
    from ...block.buffer import Buffer
    from .super import Ext4Super

_NOT_FULL = re.compile(rb"[^\xff]")
_NOT_EMPTY = re.compile(rb"[^\x00]")
_U16 = struct.Struct("<H")
METADATA_RESERVE = 64  # blocks only metadata may take: a full disk can still map what it holds


def first_zero(bm: bytearray, start: int, end: int) -> int:
    """The first clear bit in [start, end), or -1."""
    if start >= end:
        return -1
    i = start
    byte = i >> 3
    # finish the partial first byte
    while i & 7 and i < end:
        if not bm[byte] >> (i & 7) & 1:
            return i
        i += 1
    if i >= end:
        return -1
    m = _NOT_FULL.search(bm, i >> 3, (end + 7) >> 3)
    if m is None:
        return -1
    b = m.start()
    v = bm[b]
    bit = (~v & (v + 1)).bit_length() - 1  # lowest clear bit
    r = (b << 3) + bit
    return r if r < end else -1


def zero_run(bm: bytearray, start: int, end: int) -> int:
    """How many clear bits there are from ``start`` (a clear bit) up to ``end``."""
    i = start
    while i & 7 and i < end:
        if bm[i >> 3] >> (i & 7) & 1:
            return i - start
        i += 1
    if i >= end:
        return end - start
    m = _NOT_EMPTY.search(bm, i >> 3, (end + 7) >> 3)
    if m is None:
        return end - start
    b = m.start()
    v = bm[b]
    bit = (v & -v).bit_length() - 1  # lowest set bit
    return min((b << 3) + bit, end) - start


def set_bits(bm: bytearray, start: int, count: int, value: bool) -> None:
    """Set (or clear) ``count`` bits from ``start``."""
    if count == 1:  # (one block or inode: most calls)
        if value:
            bm[start >> 3] |= 1 << (start & 7)
        else:
            bm[start >> 3] &= ~(1 << (start & 7)) & 0xFF
        return
    end = start + count
    i = start
    while i < end and i & 7:
        if value:
            bm[i >> 3] |= 1 << (i & 7)
        else:
            bm[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        i += 1
    full = (end - i) >> 3
    if full:
        bm[i >> 3:(i >> 3) + full] = (b"\xff" if value else b"\0") * full
        i += full << 3
    while i < end:
        if value:
            bm[i >> 3] |= 1 << (i & 7)
        else:
            bm[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        i += 1


def count_set(bm: bytes | bytearray, start: int, count: int) -> int:
    """How many bits in [start, start + count) are set."""
    n = 0
    for i in range(start, start + count):
        n += bm[i >> 3] >> (i & 7) & 1
    return n


class Group:
    """One group descriptor's mutable fields and where it lives."""

    __slots__ = ("bb", "ib", "it", "flags", "itable_unused", "free_blocks", "free_inodes",
                 "used_dirs", "buf", "off", "checksums")

    def __init__(self, buf: Buffer, off: int, desc_size: int) -> None:
        self.buf, self.off = buf, off
        (self.bb, self.ib, self.it, self.free_blocks, self.free_inodes, self.used_dirs, self.flags,
         self.itable_unused, bcs, ics, _csum) = unpack_group_desc(buf.data, off, desc_size)
        self.checksums = (bcs, ics)


class Allocator:
    """Free space and inode bookkeeping of a read-write ext4 mount."""

    def __init__(self, sb: Ext4Super) -> None:
        self.sb = sb
        bs, ds = sb.blocksize, sb.desc_size
        per_block = bs // ds
        self.wide = ds >= 64
        self.groups: list[Group] = []
        for g in range(sb.group_count):
            nr, i = divmod(g, per_block)
            buf = sb.bread(sb.descriptor_block(nr))
            self.groups.append(Group(buf, i * ds, ds))
        self.bbitmaps: dict[int, Buffer] = {}
        self.ibitmaps: dict[int, Buffer] = {}
        self.dirty: set[int] = set()
        self.free_clusters = sum(g.free_blocks for g in self.groups)
        self.free_inodes = sum(g.free_inodes for g in self.groups)
        self.dirs = sum(g.used_dirs for g in self.groups)
        log_flex = sb.es.s_log_groups_per_flex if sb.incompat & INCOMPAT_FLEX_BG else 0
        if log_flex >= 31:
            log_flex = 0
        self.log_flex = log_flex
        self.flex = 1 << log_flex  # groups per flex group
        # per flex group, kept up to date as the groups' counts change (as Linux's
        # s_flex_groups): Orlov compares them all for every top-level directory
        nflex = (sb.group_count + self.flex - 1) >> log_flex
        self.flex_inodes, self.flex_clusters, self.flex_dirs = [0] * nflex, [0] * nflex, [0] * nflex
        for g, grp in enumerate(self.groups):
            self.flex_inodes[g >> log_flex] += grp.free_inodes
            self.flex_clusters[g >> log_flex] += grp.free_blocks
            self.flex_dirs[g >> log_flex] += grp.used_dirs
        self._meta_in: dict[int, list[tuple[int, int]]] | None = None
        # with a journal, blocks freed by the running transaction are reused only after it
        # commits (a crash must not show another file's new data in a file it restores)
        self.defer = False
        self.pending: list[tuple[int, int]] = []
        self.owed = 0  # blocks the stores of changed block maps may take (not for data)
        # per group, where a search for a free block (offset in the group) or inode (index)
        # may start: every bit before it is known to be set. The searches still find the
        # first free bit, without rescanning a group's used head for every allocation.
        self.bfree_lo: dict[int, int] = {}
        self.ifree_lo: dict[int, int] = {}

    # -- bitmaps ------------------------------------------------------------------------
    def _base_meta(self, g: int) -> int:
        """Blocks at the start of group ``g`` holding a superblock and descriptor copies."""
        sb = self.sb
        es = sb.es
        has = 1 if sb.bg_has_super(g) else 0
        per_block = sb.blocksize // sb.desc_size
        meta = sb.incompat & INCOMPAT_META_BG
        if not meta or g < es.s_first_meta_bg * per_block:
            if has:
                gdb = es.s_first_meta_bg if meta else (sb.group_count + per_block - 1) // per_block
                return has + gdb + es.s_reserved_gdt_blocks
            return 0
        first = g - g % per_block
        return has + (1 if g in (first, first + 1, first + per_block - 1) else 0)

    def _init_block_bitmap(self, g: int) -> bytearray:
        """The bitmap of a BLOCK_UNINIT group, built as the kernel and e2fsck build it."""
        sb = self.sb
        bs = sb.blocksize
        bm = bytearray(bs)
        cpg = sb.clusters_per_group
        start = sb.group_first_block(g)
        set_bits(bm, 0, self._base_meta(g), True)
        end = min(start + sb.blocks_per_group, sb.blocks_count)
        for blk, n in self._metadata_in(g):
            lo, hi = max(blk, start), min(blk + n, end)
            if lo < hi:
                set_bits(bm, lo - start, hi - lo, True)
        if end - start < cpg:
            set_bits(bm, end - start, cpg - (end - start), True)
        set_bits(bm, cpg, bs * 8 - cpg, True)
        return bm

    def _metadata_in(self, g: int) -> list[tuple[int, int]]:
        """The bitmaps and inode tables (of any group: flex_bg gathers them) that lie in
        group ``g``, as (first block, count): indexed once, so building a bitmap does not
        walk every group's descriptor."""
        index = self._meta_in
        if index is None:
            sb = self.sb
            fdb, bpg, itb = sb.first_data_block, sb.blocks_per_group, sb.inode_table_blocks
            index = self._meta_in = {}
            for grp in self.groups:
                for blk, n in ((grp.bb, 1), (grp.ib, 1), (grp.it, itb)):
                    if blk < fdb:
                        continue  # damaged: outside every group (the mount checked them)
                    for h in range((blk - fdb) // bpg, (blk + n - 1 - fdb) // bpg + 1):
                        index.setdefault(h, []).append((blk, n))
        return index.get(g, [])

    def _bitmap(self, g: int, cache: dict[int, Buffer], blk: int, uninit: int,
                init: Callable[[], bytearray], read: Callable[[Ext4Super, int], object]) -> Buffer:
        """Group ``g``'s bitmap buffer, held; built by ``init`` (and the group's UNINIT flag
        cleared) while the group is uninitialized, else read and checksum-verified."""
        buf = cache.get(g)
        if buf is None:
            sb = self.sb
            grp = self.groups[g]
            if sb.gdt_csum and grp.flags & uninit:
                buf = sb.bcache.getblk(sb.io, blk, sb.blocksize)
                buf.data[:] = init()
                grp.flags &= ~uninit
                sb.bcache.mark_dirty(buf)
                self.dirty.add(g)
            else:
                read(sb, g)  # verifies the checksum
                buf = sb.bread(blk)
            cache[g] = buf
        return buf

    def block_bitmap(self, g: int) -> Buffer:
        buf = self.bbitmaps.get(g)
        if buf is not None:
            return buf
        return self._bitmap(g, self.bbitmaps, self.groups[g].bb, EXT4_BG_BLOCK_UNINIT,
                            lambda: self._init_block_bitmap(g), read_block_bitmap)

    def inode_bitmap(self, g: int) -> Buffer:
        buf = self.ibitmaps.get(g)
        if buf is not None:
            return buf
        sb = self.sb

        def init() -> bytearray:
            bm = bytearray(sb.blocksize)
            set_bits(bm, sb.inodes_per_group, sb.blocksize * 8 - sb.inodes_per_group, True)
            return bm

        return self._bitmap(g, self.ibitmaps, self.groups[g].ib, EXT4_BG_INODE_UNINIT, init,
                            read_inode_bitmap)

    # -- blocks -----------------------------------------------------------------------------
    def group_of(self, blk: int) -> tuple[int, int]:
        sb = self.sb
        return divmod(blk - sb.first_data_block, sb.blocks_per_group)

    def alloc_blocks(self, goal: int, count: int, metadata: bool = False) -> tuple[int, int]:
        """A run of 1 to ``count`` free blocks, at ``goal`` if it is free; (first, length).

        Data may not take the last METADATA_RESERVE blocks, nor those the changed block
        maps need (``owed``). ENOSPC when nothing is free,
        even if the running transaction freed blocks: data does not take them before it
        commits (the system call is retried after the commit: ``Ext4Super.reclaim``).
        """
        sb = self.sb
        reserve = 0 if metadata else METADATA_RESERVE + self.owed
        avail = self.free_clusters - reserve
        if avail <= 0 and metadata and self.pending:
            # a block the running transaction freed may be metadata of the same transaction
            # (the journal holds its new contents until the commit: a crash before then
            # leaves the old ones in place), never data, which goes home first
            blk, n = self.pending.pop()
            if n > 1:
                self.pending.append((blk + 1, n - 1))
            return blk, 1
        if avail <= 0 or count <= 0:
            raise kerr(errno.ENOSPC, "ext4", "no free blocks")
        count = min(count, avail)
        if not sb.first_data_block <= goal < sb.blocks_count:
            goal = sb.first_data_block
        g0, off0 = self.group_of(goal)
        cpg = sb.clusters_per_group
        bm = self.block_bitmap(g0).data
        if not bm[off0 >> 3] >> (off0 & 7) & 1:  # the goal itself is free: continue there
            n = zero_run(bm, off0, min(cpg, off0 + count))
            self._mark(g0, off0, n, True)
            return goal, n
        ngroups = sb.group_count
        best: tuple[int, int, int] | None = None  # (group, offset, length)
        for k in range(ngroups + 1):
            g = (g0 + k) % ngroups
            grp = self.groups[g]
            if not grp.free_blocks:
                continue
            bm = self.block_bitmap(g).data
            lo = self.bfree_lo.get(g, 0)
            pos = max(off0 if k == 0 else 0, lo)
            end = off0 if k == ngroups else cpg  # the wrap: the goal group before the goal
            while True:
                i = first_zero(bm, pos, end)
                if pos == lo:  # every bit from the bound up to i (or to end) is set
                    lo = i if i >= 0 else end
                    if lo > self.bfree_lo.get(g, 0):
                        self.bfree_lo[g] = lo
                if i < 0:
                    break
                n = zero_run(bm, i, min(end, i + count))
                if best is None or n > best[2]:
                    best = (g, i, n)
                if n >= count:
                    break
                pos = i + n
            if best is not None and best[2] >= count:
                break
        if best is None:
            raise kerr(errno.ENOSPC, "ext4", "no free blocks")
        g, i, n = best
        self._mark(g, i, n, True)
        return sb.group_first_block(g) + i, n

    def _mark(self, g: int, i: int, n: int, used: bool) -> None:
        buf = self.block_bitmap(g)
        set_bits(buf.data, i, n, used)
        lo = self.bfree_lo.get(g, 0)
        if used:
            if i <= lo < i + n:
                self.bfree_lo[g] = i + n
        elif i < lo:
            self.bfree_lo[g] = i
        self.sb.bcache.mark_dirty(buf)
        grp = self.groups[g]
        d = -n if used else n
        grp.free_blocks += d
        self.flex_clusters[g >> self.log_flex] += d
        self.free_clusters += d
        self.dirty.add(g)

    def free_blocks(self, blk: int, count: int) -> None:
        """Return blocks to the free pool, forgetting any cached copy of them.

        EUCLEAN if a block is outside the filesystem or already free.
        """
        sb = self.sb
        if blk < sb.first_data_block or blk + count > sb.blocks_count:
            raise corrupted("ext4", f"freeing blocks [{blk}, +{count}) outside the filesystem")
        while count:
            g, i = self.group_of(blk)
            n = min(count, sb.blocks_per_group - i)
            bm = self.block_bitmap(g).data
            if count_set(bm, i, n) != n:
                raise corrupted(f"ext4 block bitmap of group {g}",
                                f"freeing blocks [{blk}, +{n}) that are already free")
            if self.defer:
                self.pending.append((blk, n))
            else:
                self._mark(g, i, n, False)
            for b in range(blk, blk + n):
                sb.bcache.forget(sb.io, b, sb.blocksize)
            blk += n
            count -= n

    def apply_pending(self) -> None:
        """Release the blocks the running transaction freed (at its commit)."""
        pending, self.pending = self.pending, []
        for blk, n in pending:
            g, i = self.group_of(blk)
            self._mark(g, i, n, False)

    # -- inodes -------------------------------------------------------------------------------
    def _orlov(self, parent_group: int, topdir: bool) -> int | None:
        """Orlov's choice of a flex group for a new directory (ext4's find_group_orlov), or
        None for the fallback. A top-level directory goes to the flex group with the fewest
        directories among those with above-average free inodes and clusters; any other
        directory stays near its parent unless that flex group holds too many directories
        or too little free space."""
        sb = self.sb
        flex = self.flex
        nflex = len(self.flex_inodes)
        avg_inodes = self.free_inodes // nflex
        avg_clusters = self.free_clusters // nflex
        start = parent_group // flex
        inodes, clusters, dirs = self.flex_inodes, self.flex_clusters, self.flex_dirs
        if topdir:
            best, best_dirs = None, sb.inodes_per_group
            for fg in chain(range(start, nflex), range(start)):
                fi = inodes[fg]
                if fi and dirs[fg] < best_dirs and fi >= avg_inodes and clusters[fg] >= avg_clusters:
                    best, best_dirs = fg, dirs[fg]
            return best
        max_dirs = self.dirs // nflex + sb.inodes_per_group * flex // 16
        min_inodes = max(avg_inodes - sb.inodes_per_group * flex // 4, 1)
        min_clusters = avg_clusters - sb.clusters_per_group * flex // 4
        for fg in chain(range(start, nflex), range(start)):
            if dirs[fg] < max_dirs and inodes[fg] >= min_inodes and clusters[fg] >= min_clusters:
                return fg
        return None

    def _first_group(self, parent_group: int, is_dir: bool, topdir: bool) -> int:
        """The group to try first for a new inode (then every group after it): for a
        directory the first group with free inodes in the flex group Orlov chooses (inodes
        packed at the start of a flex group's tables), else the first group from the
        parent's with at least the average of free inodes; for anything else the parent's
        group."""
        n = self.sb.group_count
        groups = self.groups
        first = parent_group
        if is_dir and n > 1:
            fg = self._orlov(parent_group, topdir)
            if fg is not None:
                first = next((g for g in range(fg * self.flex, min((fg + 1) * self.flex, n))
                              if groups[g].free_inodes), fg * self.flex)
            else:
                avg = self.free_inodes // n
                first = next((g for g in ((parent_group + k) % n for k in range(n))
                              if groups[g].free_inodes >= max(avg, 1)), parent_group)
        return first

    def alloc_inode(self, parent_ino: int, is_dir: bool, topdir: bool = False) -> int:
        """A free inode number (marked used); ENOSPC when none is left. ``topdir``: a
        directory made in the root or in a directory flagged TOPDIR (spread out by Orlov)."""
        sb = self.sb
        if self.free_inodes <= 0:
            raise kerr(errno.ENOSPC, "ext4", "no free inodes")
        ipg = sb.inodes_per_group
        pg = (parent_ino - 1) // ipg if parent_ino else 0
        n = sb.group_count
        first = self._first_group(pg, is_dir, topdir)
        for k in range(n):
            g = (first + k) % n
            grp = self.groups[g]
            if not grp.free_inodes:
                continue
            bm = self.inode_bitmap(g).data
            start = max(sb.first_ino - g * ipg, 0) if g * ipg < sb.first_ino else 0
            i = first_zero(bm, max(start, self.ifree_lo.get(g, 0)), ipg)
            if i < 0:
                self.ifree_lo[g] = ipg
                continue
            self.ifree_lo[g] = i + 1
            self._prepare_itable(g, i)
            set_bits(bm, i, 1, True)
            sb.bcache.mark_dirty(self.ibitmaps[g])
            grp.free_inodes -= 1
            self.free_inodes -= 1
            fg = g >> self.log_flex
            self.flex_inodes[fg] -= 1
            if is_dir:
                grp.used_dirs += 1
                self.flex_dirs[fg] += 1
                self.dirs += 1
            if sb.gdt_csum and ipg - grp.itable_unused <= i:
                grp.itable_unused = ipg - i - 1
            self.dirty.add(g)
            return g * ipg + i + 1
        raise kerr(errno.ENOSPC, "ext4", "no free inodes")

    def _prepare_itable(self, g: int, i: int) -> None:
        """Zero a never-zeroed inode table before handing out its inodes."""
        sb = self.sb
        grp = self.groups[g]
        if not sb.gdt_csum or grp.flags & EXT4_BG_INODE_ZEROED:
            return
        used = sb.inodes_per_group - grp.itable_unused
        if i < used:
            return
        # zero the whole table once (it is written through the buffer cache's device)
        bs = sb.blocksize
        first = (used * sb.inode_size) // bs
        for b in range(grp.it + first, grp.it + sb.inode_table_blocks):
            sb.bcache.forget(sb.io, b, bs)
        sb.io.zeroout((grp.it + first) * bs, (sb.inode_table_blocks - first) * bs, unmap=False)
        grp.flags |= EXT4_BG_INODE_ZEROED
        self.dirty.add(g)

    def free_inode(self, ino: int, is_dir: bool) -> None:
        sb = self.sb
        g, i = divmod(ino - 1, sb.inodes_per_group)
        buf = self.inode_bitmap(g)
        bm = buf.data
        if not bm[i >> 3] >> (i & 7) & 1:
            raise corrupted(f"ext4 inode bitmap of group {g}", f"freeing free inode {ino}")
        set_bits(bm, i, 1, False)
        if i < self.ifree_lo.get(g, 0):
            self.ifree_lo[g] = i
        sb.bcache.mark_dirty(buf)
        grp = self.groups[g]
        grp.free_inodes += 1
        self.free_inodes += 1
        fg = g >> self.log_flex
        self.flex_inodes[fg] += 1
        if is_dir:
            grp.used_dirs -= 1
            self.flex_dirs[fg] -= 1
            self.dirs -= 1
        self.dirty.add(g)

    # -- commit ---------------------------------------------------------------------------------
    def commit(self) -> None:
        """Store changed group descriptors with fresh bitmap and descriptor checksums."""
        if not self.dirty:
            return
        sb = self.sb
        bc = sb.bcache
        wide = self.wide
        for g in sorted(self.dirty):
            grp = self.groups[g]
            d, o = grp.buf.data, grp.off
            bcs, ics = grp.checksums
            if sb.metadata_csum:
                if g in self.bbitmaps:
                    c = ck.bitmap_csum(sb.csum_seed, memoryview(self.bbitmaps[g].data)[
                        :sb.clusters_per_group // 8])
                    bcs = c if sb.desc_size >= BG_BLOCK_BITMAP_CSUM_HI_END else c & 0xFFFF
                if g in self.ibitmaps:
                    c = ck.bitmap_csum(sb.csum_seed, memoryview(self.ibitmaps[g].data)[
                        :sb.inodes_per_group // 8])
                    ics = c if sb.desc_size >= BG_INODE_BITMAP_CSUM_HI_END else c & 0xFFFF
                grp.checksums = (bcs, ics)
            pack16 = _U16.pack_into
            pack16(d, o + 0x0C, grp.free_blocks & 0xFFFF)
            pack16(d, o + 0x0E, grp.free_inodes & 0xFFFF)
            pack16(d, o + 0x10, grp.used_dirs & 0xFFFF)
            pack16(d, o + 0x12, grp.flags)
            pack16(d, o + 0x18, bcs & 0xFFFF)
            pack16(d, o + 0x1A, ics & 0xFFFF)
            pack16(d, o + 0x1C, grp.itable_unused & 0xFFFF)
            if wide:
                pack16(d, o + 0x2C, grp.free_blocks >> 16)
                pack16(d, o + 0x2E, grp.free_inodes >> 16)
                pack16(d, o + 0x30, grp.used_dirs >> 16)
                pack16(d, o + 0x32, grp.itable_unused >> 16)
                if sb.desc_size >= BG_BLOCK_BITMAP_CSUM_HI_END:
                    pack16(d, o + 0x38, bcs >> 16)
                if sb.desc_size >= BG_INODE_BITMAP_CSUM_HI_END:
                    pack16(d, o + 0x3A, ics >> 16)
            if sb.gdt_csum:
                desc = memoryview(d)[o:o + sb.desc_size]
                pack16(d, o + BG_CHECKSUM_OFFSET, ck.group_desc_csum(
                    sb.metadata_csum, sb.csum_seed, sb.uuid, g, desc))
            bc.mark_dirty(grp.buf)
            old = sb.groups[g]
            sb.groups[g] = (old[0], old[1], old[2], grp.flags, grp.itable_unused,
                            grp.free_blocks, grp.free_inodes, bcs | ics << 32)
        self.dirty.clear()
