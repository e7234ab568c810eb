"""Writing the journal (fs/jbd2/commit.c and checkpoint.c's role, written from the format
description in Documentation/filesystems/ext4/journal.rst).

Model: one running transaction collects every metadata buffer the filesystem
dirties (``JournalingCache.mark_dirty``); those buffers are pinned in memory
and never written to their home location before the transaction commits.
A commit, always between two system calls:

1. when the log is empty, the journal superblock points it at the
   transaction (``s_start``, ``s_sequence``), and is flushed; otherwise the
   transaction follows the last one in the log (recovery walks the sequence);
2. descriptor blocks (64-bit tags, csum v2/v3 tag and block checksums where
   the journal has them; blocks that start with the jbd2 magic escaped) and
   the copies of the buffers are written to the log; flush;
3. the commit block (with its checksum) is written; flush: the transaction
   is durable, recovery will replay it. An fsync waits for no more.

These writes and flushes are issued behind (``wait=False``): the disk's
write-behind thread performs them in this order while the next transaction
runs, as jbd2's commit thread does; ``sync`` and ``fsync`` wait for them.

Checkpointing is lazy, as jbd2's: committed blocks stay in the log (and
dirty in the cache, which may write them home whenever it likes) until the
log or memory runs short, or the filesystem is unmounted. ``checkpoint``
then writes the committed copies home (never a buffer the running
transaction has changed since), flushes, and empties the log (``s_start``
0, next sequence).

No revoke records are written; instead a block that is in the log is never
reused while it is there: freeing one (``forget``) makes the commit that
frees it checkpoint at once, before the allocator hands the block out again,
so a replay can never write old metadata over what a reused block holds.
Blocks freed by the running transaction are not reused before it commits
(the allocator defers the frees; when it must take them early, at ENOSPC, it
checkpoints first), so file data written into reused blocks can never be
exposed by a crash. File data is written before the commit (ordered mode).
"""

from __future__ import annotations

import errno
import logging
import struct
import time
from typing import TYPE_CHECKING

from ....errors import kerr
from ....lib.crc import crc32c_raw
from .ondisk import (
    JBD2_COMMIT_BLOCK,
    JBD2_CRC32C_CHKSUM,
    JBD2_DESCRIPTOR_BLOCK,
    JBD2_FEATURE_COMPAT_CHECKSUM,
    JBD2_FEATURE_INCOMPAT_64BIT,
    JBD2_FEATURE_INCOMPAT_CSUM_V2,
    JBD2_FEATURE_INCOMPAT_CSUM_V3,
    JBD2_FLAG_ESCAPE,
    JBD2_FLAG_LAST_TAG,
    JBD2_FLAG_SAME_UUID,
    JBD2_MAGIC_NUMBER,
    JBD2_SUPERBLOCK_V2,
    JSB_CHECKSUM_OFFSET,
)
from .recovery import tag_bytes

if TYPE_CHECKING:
    from ....block.blkdev import BlockDevice
    from ....block.buffer import Buffer, BufferCache
    from .journal import Journal

log = logging.getLogger(__name__)

_HDR = struct.Struct(">III")
_MAGIC = struct.pack(">I", JBD2_MAGIC_NUMBER)
COMMIT_INTERVAL = 5.0  # seconds a transaction may run before it commits (commit=5)


class JournalingCache:
    """The buffer cache as one filesystem sees it: every buffer it dirties joins the
    running transaction instead of being written back on its own."""

    def __init__(self, cache: BufferCache, writer: JournalWriter) -> None:
        self._cache = cache
        self._writer = writer
        # the cache's own methods, bound once
        self.bread, self.getblk, self.bread_many = cache.bread, cache.getblk, cache.bread_many
        self.peek = cache.peek  # (every inode stored looks its table block up)
        self.dirty_buffers, self.sync, self.invalidate = (
            cache.dirty_buffers, cache.sync, cache.invalidate)

    def mark_dirty(self, buf: Buffer) -> None:
        self._cache.mark_dirty(buf)
        self._writer.running[buf.blocknr] = buf

    def forget(self, bdev: BlockDevice, blocknr: int, size: int) -> None:
        """A metadata block was freed: out of the transaction; if the log holds it, the log
        must be checkpointed before the block can be reused (its committed copy still goes
        home: until the free commits, the committed tree points to it)."""
        w = self._writer
        w.running.pop(blocknr, None)
        if blocknr in w.live:
            w.freed_live = True
        self._cache.forget(bdev, blocknr, size)


class JournalWriter:
    """Commits and checkpoints transactions into an internal jbd2 journal."""

    def __init__(self, journal: Journal, dev: BlockDevice, cache: BufferCache, uuid: bytes) -> None:
        self.j = journal
        self.dev = dev
        self.cache = cache
        self.uuid = uuid
        self.bs = journal.blocksize
        self.running: dict[int, Buffer] = {}
        self.started = 0.0
        # committed, not yet checkpointed: block -> its content as committed
        self.live: dict[int, bytes] = {}
        self.head = journal.first  # where the next transaction goes in the log
        self.freed_live = False  # a block in the log was freed: checkpoint before reuse
        self.checkpoints = 0
        self.sequence = journal.sequence
        self.commits = 0
        self._jsb: bytearray | None = None  # the journal superblock as last written
        self._limits()

    def _limits(self) -> None:
        """Tags per descriptor block, and the largest transaction: it must fit the log
        with its descriptors and commit block (both change with the tag format)."""
        j = self.j
        self.tag_size = tag_bytes(j)
        per_desc = (self.bs - 12 - 16 - (4 if j.csum else 0)) // self.tag_size
        self.per_desc = per_desc
        log_blocks = j.last - j.first
        self.max_blocks = max(16, (log_blocks - 2) * per_desc // (per_desc + 1) - 2)
        self.commit_at = self.max_blocks // 4  # blocks (and inodes) a transaction may reach

    def set_features(self, want_64bit: bool, want_csum: bool) -> None:
        """Turn on 64-bit block tags and checksums (v3) in the journal, as ext4 does when it
        mounts a 64bit or metadata_csum filesystem read-write."""
        j = self.j
        pblk, _n = j._pblk(0)
        raw = self._jsb = self.dev.read(pblk * self.bs, self.bs)  # (kept: _write_jsb)
        blocktype, compat, incompat = struct.unpack_from(">I", raw, 4)[0], \
            struct.unpack_from(">I", raw, 36)[0], struct.unpack_from(">I", raw, 40)[0]
        if blocktype != JBD2_SUPERBLOCK_V2:
            return  # a version 1 journal has no feature fields
        new = incompat
        if want_64bit:
            new |= JBD2_FEATURE_INCOMPAT_64BIT
        if want_csum and not incompat & (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3):
            new |= JBD2_FEATURE_INCOMPAT_CSUM_V3
            compat &= ~JBD2_FEATURE_COMPAT_CHECKSUM
            raw[80] = JBD2_CRC32C_CHKSUM
        if new == incompat:
            return
        struct.pack_into(">II", raw, 36, compat, new)
        j.incompat = new
        j.has_64bit = bool(new & JBD2_FEATURE_INCOMPAT_64BIT)
        j.csum_v3 = bool(new & JBD2_FEATURE_INCOMPAT_CSUM_V3)
        j.csum = bool(new & (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3))
        if j.csum:
            j.csum_seed = crc32c_raw(0xFFFFFFFF, bytes(raw[48:64]))
            struct.pack_into(">I", raw, JSB_CHECKSUM_OFFSET, 0)
            struct.pack_into(">I", raw, JSB_CHECKSUM_OFFSET, crc32c_raw(0xFFFFFFFF, bytes(raw[:1024])))
        self._write_log(0, bytes(raw))
        self.dev.flush()
        self._limits()

    # -- limits ------------------------------------------------------------------------------
    def should_commit(self, n: int, budget_blocks: int) -> bool:
        """Commit now: the transaction (``n`` blocks and inodes) is old, fills a quarter of
        the log, or pins a third of the buffer cache."""
        if not n:
            return False
        now = time.monotonic()
        if not self.started:
            self.started = now
        return (n >= self.commit_at or n >= budget_blocks // 3
                or now - self.started >= COMMIT_INTERVAL)

    # -- writing the log ------------------------------------------------------------------------
    def _write_log(self, n: int, data: bytes | bytearray) -> None:
        """Journal block ``n``, issued behind (``data`` must not change afterwards)."""
        pblk, _avail = self.j._pblk(n)
        self.dev.write_many([(pblk * self.bs, [memoryview(data)])], wait=False)

    def _write_log_run(self, first: int, blocks: list[bytes | bytearray]) -> None:
        """Journal blocks ``first``, ``first + 1``, ... as one batch of requests (one
        multi-segment request per physically contiguous piece of the log), issued behind."""
        writes: list[tuple[int, list[memoryview]]] = []
        n, i = first, 0
        while i < len(blocks):
            pblk, avail = self.j._pblk(n)
            take = blocks[i:i + avail]
            writes.append((pblk * self.bs, [memoryview(b) for b in take]))
            n += len(take)
            i += len(take)
        self.dev.write_many(writes, wait=False)

    def _write_jsb(self, start: int, sequence: int) -> None:
        if self._jsb is None:  # read once: only this writer changes it while mounted
            pblk, _n = self.j._pblk(0)
            self._jsb = self.dev.read(pblk * self.bs, self.bs)
        raw = self._jsb
        struct.pack_into(">II", raw, 24, sequence & 0xFFFFFFFF, start)
        if self.j.csum:
            struct.pack_into(">I", raw, JSB_CHECKSUM_OFFSET, 0)
            struct.pack_into(">I", raw, JSB_CHECKSUM_OFFSET, crc32c_raw(0xFFFFFFFF, bytes(raw[:1024])))
        self._write_log(0, bytes(raw))
        self.dev.flush(wait=False)

    def _block_csum(self, block: bytearray) -> None:
        """The descriptor block tail: crc32c over the block with the tail zero."""
        struct.pack_into(">I", block, self.bs - 4, 0)
        struct.pack_into(">I", block, self.bs - 4, crc32c_raw(self.j.csum_seed, bytes(block)))

    def _tag(self, block: bytearray, off: int, blocknr: int, flags: int, data: bytes) -> None:
        j = self.j
        csum = 0
        if j.csum:
            c = crc32c_raw(j.csum_seed, struct.pack(">I", self.sequence & 0xFFFFFFFF))
            csum = crc32c_raw(c, data)
        if j.csum_v3:
            struct.pack_into(">IIII", block, off, blocknr & 0xFFFFFFFF, flags, blocknr >> 32, csum)
        else:
            struct.pack_into(">IHH", block, off, blocknr & 0xFFFFFFFF, csum & 0xFFFF, flags)
            if j.has_64bit:
                struct.pack_into(">I", block, off + 8, blocknr >> 32)

    def commit(self) -> bool:
        """Commit the running transaction (checkpointing when the log or memory runs
        short, or a block in the log was freed); False if it was empty."""
        if not self.running:
            return False
        bufs = sorted(self.running.values(), key=lambda b: b.blocknr)
        if len(bufs) > self.max_blocks:
            raise kerr(errno.ENOSPC, "jbd2", f"transaction of {len(bufs)} blocks exceeds the journal")
        j = self.j
        seq = self.sequence
        bs = self.bs
        tail = 4 if j.csum else 0
        need = len(bufs) + -(-len(bufs) // self.per_desc) + 1  # copies, descriptors, commit
        if self.head + need > j.last:
            self.checkpoint()  # no room after the transactions in the log: empty it
        pos = self.head
        if pos == j.first:
            self._write_jsb(pos, seq)
        committed: list[tuple[int, bytes]] = []
        log: list[bytes | bytearray] = []
        for k in range(0, len(bufs), self.per_desc):
            chunk = bufs[k:k + self.per_desc]
            desc = bytearray(bs)
            _HDR.pack_into(desc, 0, JBD2_MAGIC_NUMBER, JBD2_DESCRIPTOR_BLOCK, seq & 0xFFFFFFFF)
            off = 12
            copies = []
            for i, b in enumerate(chunk):
                data = bytes(b.data)
                flags = 0 if i == 0 else JBD2_FLAG_SAME_UUID
                if i == len(chunk) - 1:
                    flags |= JBD2_FLAG_LAST_TAG
                if data[:4] == _MAGIC:
                    flags |= JBD2_FLAG_ESCAPE
                    copy = b"\0\0\0\0" + data[4:]
                else:
                    copy = data
                committed.append((b.blocknr, data))
                self._tag(desc, off, b.blocknr, flags, copy)  # the checksum covers the log copy
                off += self.tag_size
                if i == 0:
                    desc[off:off + 16] = self.uuid
                    off += 16
                copies.append(copy)
            assert off <= bs - tail
            if j.csum:
                self._block_csum(desc)
            log.append(desc)
            log.extend(copies)
        self._write_log_run(pos, log)
        pos += len(log)
        self.dev.flush(wait=False)  # the log before its commit block
        # the commit block
        commit = bytearray(bs)
        _HDR.pack_into(commit, 0, JBD2_MAGIC_NUMBER, JBD2_COMMIT_BLOCK, seq & 0xFFFFFFFF)
        now = time.time_ns()
        struct.pack_into(">QI", commit, 48, now // 10**9, now % 10**9)
        if j.csum:
            commit[12] = JBD2_CRC32C_CHKSUM
            commit[13] = 4
            struct.pack_into(">I", commit, 16, crc32c_raw(j.csum_seed, bytes(commit)))
        self._write_log(pos, commit)
        self.dev.flush(wait=False)
        self.head = pos + 1
        self.live.update(committed)
        self.running = {}
        self.started = 0.0
        self.sequence = seq + 1
        self.commits += 1
        if (self.freed_live or self.head - j.first > (j.last - j.first) // 2
                or len(self.live) * bs > self.cache.budget // 4):
            self.checkpoint()
        return True

    def checkpoint(self) -> None:
        """Write the committed blocks home from their committed copies (the running
        transaction's buffers are left alone), flush, and empty the log."""
        self.freed_live = False
        if self.head == self.j.first:
            return
        bs = self.bs
        if self.live:  # (neighbouring blocks go out as one request)
            self.dev.write_many([(b * bs, [memoryview(d)]) for b, d in self.live.items()],
                                wait=False)
        self.dev.flush(wait=False)  # home before the log is emptied
        # what went home is clean in the cache unless the running transaction changed it
        for blocknr in self.live:
            if blocknr not in self.running:
                self.cache.clean(self.dev, blocknr, bs)
        self.live = {}
        self.head = self.j.first
        self._write_jsb(0, self.sequence)
        self.checkpoints += 1
