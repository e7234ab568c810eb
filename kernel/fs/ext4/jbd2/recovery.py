"""Journal recovery (fs/jbd2/recovery.c's passes, written from the format description).

Three passes walk the log from ``s_start`` with expected transaction id
``s_sequence``, each stopping at a block without the jbd2 magic or with
another sequence:

1. SCAN finds the last complete transaction (one whose commit block is
   present and, with checksums, valid);
2. REVOKE collects revoke records: block -> newest revoking transaction;
3. REPLAY writes each logged block to its home location unless a
   transaction at least as new revoked it; escaped blocks get their magic
   back; blocks failing their tag checksum are skipped, as Linux does.

Writes go to ``write(blocknr, data)``: an in-memory overlay for read-only
mounts, the device for a read-write mount. Every loop is bounded by the
journal length.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ....errors import EFSBADCRC, corrupted
from ....lib.crc import crc32c_raw
from .journal import Journal
from .ondisk import (
    COMMIT_CHKSUM_OFFSET,
    JBD2_COMMIT_BLOCK,
    JBD2_DESCRIPTOR_BLOCK,
    JBD2_FLAG_ESCAPE,
    JBD2_FLAG_LAST_TAG,
    JBD2_FLAG_SAME_UUID,
    JBD2_MAGIC_NUMBER,
    JBD2_REVOKE_BLOCK,
)

log = logging.getLogger(__name__)

_HDR = struct.Struct(">III")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_TAG3 = struct.Struct(">IIII")
_TAG = struct.Struct(">IHHI")
_TAG32 = struct.Struct(">IHH")
_MAGIC = _BE32.pack(JBD2_MAGIC_NUMBER)

PASS_SCAN, PASS_REVOKE, PASS_REPLAY = 0, 1, 2


@dataclass
class RecoveryInfo:
    start_transaction: int = 0
    end_transaction: int = 0  # the first id NOT replayed
    transactions: int = 0
    replayed: int = 0
    revoked: int = 0
    revoke_records: int = 0
    bad_tag_csums: int = 0
    escaped: int = 0


def _tid_geq(a: int, b: int) -> bool:
    """a >= b for 32-bit transaction ids that wrap (tid_geq)."""
    return ((a - b) & 0xFFFFFFFF) < 0x80000000


def tag_bytes(j: Journal) -> int:
    if j.csum_v3:
        return 16
    size = 12
    if j.csum:
        size += 2
    return size if j.has_64bit else size - 4


def _tags(j: Journal, block: bytes) -> list[tuple[int, int, int]]:
    """(home block, flags, stored checksum) of each tag in a descriptor block."""
    size = j.blocksize - (4 if j.csum else 0)
    tb = tag_bytes(j)
    out = []
    pos = 12
    while pos + tb <= size:
        if j.csum_v3:
            lo, flags, hi, csum = _TAG3.unpack_from(block, pos)
        elif j.has_64bit:
            lo, csum, flags, hi = _TAG.unpack_from(block, pos)
        else:
            lo, csum, flags = _TAG32.unpack_from(block, pos)
            hi = 0
        blocknr = lo | (hi << 32 if j.has_64bit else 0)
        out.append((blocknr, flags, csum))
        pos += tb
        if not flags & JBD2_FLAG_SAME_UUID:
            pos += 16
        if flags & JBD2_FLAG_LAST_TAG:
            break
    return out


def _block_tail_ok(j: Journal, block: bytes) -> bool:
    """Descriptor and revoke blocks: crc32c of the block with its tail zeroed."""
    if not j.csum:
        return True
    bs = j.blocksize
    stored = _BE32.unpack_from(block, bs - 4)[0]
    return crc32c_raw(j.csum_seed, block[:bs - 4] + bytes(4)) == stored


def _commit_ok(j: Journal, block: bytes) -> bool:
    if not j.csum:
        return True
    stored = _BE32.unpack_from(block, COMMIT_CHKSUM_OFFSET)[0]
    zeroed = block[:COMMIT_CHKSUM_OFFSET] + bytes(4) + block[COMMIT_CHKSUM_OFFSET + 4:]
    return crc32c_raw(j.csum_seed, zeroed) == stored


def _data_ok(j: Journal, sequence: int, data: bytes, stored: int) -> bool:
    if not j.csum:
        return True
    c = crc32c_raw(crc32c_raw(j.csum_seed, _BE32.pack(sequence)), data)
    return (c if j.csum_v3 else c & 0xFFFF) == stored


def recover(j: Journal, write: Callable[[int, bytes], None], fs_blocks: int) -> RecoveryInfo:
    """Replay the committed transactions of ``j`` through ``write``.

    EUCLEAN for a log that points outside the filesystem or never ends,
    EBADMSG for a revoke block failing its checksum, EIO if unreadable.
    """
    info = RecoveryInfo(start_transaction=j.sequence)
    if not j.start:
        info.end_transaction = j.sequence
        return info
    revoked: dict[int, int] = {}
    end = _one_pass(j, PASS_SCAN, info, revoked, write, fs_blocks, None)
    info.end_transaction = end
    info.transactions = (end - j.sequence) & 0xFFFFFFFF
    _one_pass(j, PASS_REVOKE, info, revoked, write, fs_blocks, end)
    _one_pass(j, PASS_REPLAY, info, revoked, write, fs_blocks, end)
    return info


def _one_pass(j: Journal, pass_: int, info: RecoveryInfo, revoked: dict[int, int],
              write: Callable[[int, bytes], None], fs_blocks: int, end: int | None) -> int:
    what = f"jbd2 journal (inode {j.inode.ino})"
    seq = j.sequence
    pos = j.start
    walked = 0
    limit = j.last - j.first
    while True:
        if end is not None and seq == end:
            break
        if walked > limit:
            raise corrupted(what, "the log wraps onto itself")
        block = j.read(pos)
        pos = j.wrap(pos + 1)
        walked += 1
        magic, btype, bseq = _HDR.unpack_from(block, 0)
        if magic != JBD2_MAGIC_NUMBER or bseq != seq:
            break
        if btype == JBD2_DESCRIPTOR_BLOCK:
            tags = _tags(j, block)
            if pass_ == PASS_SCAN and not _block_tail_ok(j, block):
                log.warning("%s: descriptor block of transaction %d fails its checksum; "
                            "the log ends there", what, seq)
                break
            for blocknr, flags, csum in tags:
                data_pos = pos
                pos = j.wrap(pos + 1)
                walked += 1
                if pass_ != PASS_REPLAY:
                    continue
                if blocknr >= fs_blocks:
                    raise corrupted(what, f"transaction {seq} logs block {blocknr}, beyond the "
                                    f"filesystem's {fs_blocks} blocks")
                rev = revoked.get(blocknr)
                if rev is not None and _tid_geq(rev, seq):
                    info.revoked += 1
                    continue
                data = j.read(data_pos)
                if not _data_ok(j, seq, data, csum):
                    log.warning("%s: block %d of transaction %d fails its checksum; skipped",
                                what, blocknr, seq)
                    info.bad_tag_csums += 1
                    continue
                if flags & JBD2_FLAG_ESCAPE:
                    data = _MAGIC + data[4:]
                    info.escaped += 1
                write(blocknr, data)
                info.replayed += 1
            continue
        if btype == JBD2_COMMIT_BLOCK:
            if pass_ == PASS_SCAN and not _commit_ok(j, block):
                log.warning("%s: commit block of transaction %d fails its checksum; "
                            "the log ends there", what, seq)
                break
            seq = (seq + 1) & 0xFFFFFFFF
            continue
        if btype == JBD2_REVOKE_BLOCK:
            if pass_ == PASS_REVOKE:
                _revoke_records(j, block, seq, revoked, info, what)
            continue
        break  # anything else ends the log
    return seq


def _revoke_records(j: Journal, block: bytes, seq: int, revoked: dict[int, int],
                    info: RecoveryInfo, what: str) -> None:
    if not _block_tail_ok(j, block):
        raise corrupted(what, f"revoke block of transaction {seq} fails its checksum", EFSBADCRC)
    count = _BE32.unpack_from(block, 12)[0]
    rsize = 8 if j.has_64bit else 4
    max_count = j.blocksize - (4 if j.csum else 0)
    if count < 16 or count > max_count:
        raise corrupted(what, f"revoke block of transaction {seq} has a bad size {count}")
    unpack = _BE64.unpack_from if rsize == 8 else _BE32.unpack_from
    for off in range(16, count - rsize + 1, rsize):
        blocknr = unpack(block, off)[0]
        old = revoked.get(blocknr)
        if old is None or _tid_geq(seq, old):
            revoked[blocknr] = seq
        info.revoke_records += 1
