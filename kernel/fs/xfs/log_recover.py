"""Log recovery into memory (fs/xfs/xfs_log_recover.c, xfs_*_item_recover.c).

The internal log is a circular sequence of 512-byte basic blocks (BBs).
Every BB's first word holds the cycle number of the pass that wrote it (the
overwritten words are saved in the record header), so the head is where the
cycle number drops. The last record before the head names the tail; a last
record holding only an unmount operation means a clean log.

A dirty log is replayed as Linux does: records from tail to head are checked
(magic, CRC) and unpacked, operations are gathered into transactions by id,
and committed transactions are replayed in two passes. Pass one notes
cancelled buffers; pass two replays buffer items (regular and inode-buffer
unlinked pointers), inode items (core converted from the writer's byte
order, forks, btree roots) and inode-allocation (icreate) items, skipping
cancelled buffers and metadata whose on-disk LSN is already newer. Every
change lands in an ``OverlayDevice``: the image itself is never written.
Deferred-operation intents (EFI, RUI, CUI, BUI, ATTRI...) only concern space
accounting that a read-only view does not use, and are not replayed.
"""

from __future__ import annotations

import errno
import logging
import struct
from typing import TYPE_CHECKING, Any

from ...block.overlay import OverlayDevice
from ...errors import corrupted, kerr
from . import ondisk as od
from .cksum import compute_crc, update_crc

if TYPE_CHECKING:
    from ...block.blkdev import BlockDevice
    from .super import XfsSuper

log = logging.getLogger(__name__)

_u32 = struct.Struct(">I")
_u16 = struct.Struct(">H")
_u64 = struct.Struct(">Q")
_le32 = struct.Struct("<I")
_MAX_REC = 256 * 1024  # XLOG_MAX_RECORD_BSIZE
_WINDOW = 8 * _MAX_REC // od.BBSIZE  # XLOG_MAX_ICLOGS in-flight records
_MAX_REGIONS = 512 + 3


class Log:
    """The internal log region of the device, in basic blocks."""

    def __init__(self, sb: XfsSuper, dev: BlockDevice) -> None:
        geo = sb.geo
        self.geo = geo
        self.dev = dev
        lin = geo.fsb_to_linear(geo.logstart, geo.logblocks, "internal log")
        self.base = lin * geo.blocksize
        self.nbb = geo.logblocks * geo.blocksize // od.BBSIZE
        self.what = "xfs log"

    def read(self, blk: int, n: int) -> bytes:
        """``n`` BBs from ``blk``, wrapping at the end of the log."""
        nbb = self.nbb
        if n > nbb:
            raise corrupted(self.what, f"read of {n} blocks from a log of {nbb}")
        blk %= nbb
        if blk + n <= nbb:
            return bytes(self.dev.read(self.base + blk * 512, n * 512))
        first = nbb - blk
        return bytes(self.dev.read(self.base + blk * 512, first * 512)) + \
            bytes(self.dev.read(self.base, (n - first) * 512))

    def cycle(self, blk: int) -> int:
        data = self.read(blk, 1)
        return _cycle_of(data, 0)


def _cycle_of(data: bytes, off: int) -> int:
    word = _u32.unpack_from(data, off)[0]
    if word == od.XLOG_HEADER_MAGIC_NUM:
        return _u32.unpack_from(data, off + 4)[0]  # type: ignore[no-any-return]
    return word  # type: ignore[no-any-return]


# -- head and tail ------------------------------------------------------------------------
def find_head(lg: Log) -> int:
    """The first BB after the last one written (xlog_find_head)."""
    n = lg.nbb
    c0 = lg.cycle(0)
    if c0 == 0:
        return 0  # a zeroed log
    cl = lg.cycle(n - 1)
    if c0 == cl:
        head = n
        old = c0 - 1
    else:
        if cl != c0 - 1:
            raise corrupted(lg.what, f"cycle numbers {c0} and {cl} at the ends of the log")
        old = cl
        lo, hi = 0, n - 1  # cycle(lo) == c0, cycle(hi) == old
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if lg.cycle(mid) == c0:
                lo = mid
            else:
                hi = mid
        head = hi
    # writes complete out of order: an older-cycle hole shortly before the head is the head
    start = max(0, head - _WINDOW)
    if head > start:
        data = lg.read(start, head - start)
        for i in range(head - start):
            if _cycle_of(data, i * 512) == old:
                head = start + i
                break
    return head % n


def _header_bbs(h: Any, logv2: bool) -> int:
    if logv2 and h.h_version == od.XLOG_VERSION_2 and h.h_size > od.XLOG_HEADER_CYCLE_SIZE:
        return (h.h_size + od.XLOG_HEADER_CYCLE_SIZE - 1) // od.XLOG_HEADER_CYCLE_SIZE
    return 1


def _check_header(lg: Log, h: Any, blk: int) -> None:
    if h.h_magicno != od.XLOG_HEADER_MAGIC_NUM:
        raise corrupted(lg.what, f"no record header at block {blk}")
    if h.h_version not in (od.XLOG_VERSION_1, od.XLOG_VERSION_2):
        raise corrupted(lg.what, f"record at block {blk} has version {h.h_version}")
    if not 0 <= h.h_len <= _MAX_REC * 2 or h.h_num_logops < 0:
        raise corrupted(lg.what, f"record at block {blk} has bad length {h.h_len}")
    if h.h_fs_uuid != lg.geo.uuid:
        raise corrupted(lg.what, f"record at block {blk} belongs to another filesystem")


def find_last_record(lg: Log, head: int) -> int | None:
    """The block of the last record header before ``head``, or None."""
    n = lg.nbb
    limit = min(n, _MAX_REC * 2 // 512 + 80)
    pos = head
    scanned = 0
    while scanned < limit:
        take = min(64, limit - scanned)
        start = (pos - take) % n
        data = lg.read(start, take)
        for i in range(take - 1, -1, -1):
            if _u32.unpack_from(data, i * 512)[0] == od.XLOG_HEADER_MAGIC_NUM:
                return (start + i) % n
        pos = start
        scanned += take
    return None


def _read_record(lg: Log, blk: int) -> tuple[Any, int, bytes]:
    """(header, total BBs, unpacked data) of the record at ``blk``; EUCLEAN on CRC errors."""
    first = lg.read(blk, 1)
    h = od.xlog_rec_header.unpack_from(first, 0)
    _check_header(lg, h, blk)
    hbb = _header_bbs(h, lg.geo.logv2)
    dbb = (h.h_len + 511) // 512
    if hbb + dbb > lg.nbb:
        raise corrupted(lg.what, f"record at block {blk} larger than the log")
    hdrs = first + (lg.read(blk + 1, hbb - 1) if hbb > 1 else b"")
    data = bytearray(lg.read(blk + hbb, dbb))[:h.h_len]
    stored = _le32.unpack_from(first, od.XLOG_REC_CRC_OFF)[0]
    if stored or lg.geo.crc:
        crc = compute_crc(first[:od.xlog_rec_header.size], od.XLOG_REC_CRC_OFF)
        from ...lib.crc import crc32c

        for j in range(1, hbb):
            crc = crc32c(hdrs[j * 512:j * 512 + od.xlog_rec_ext_header.size], crc)
        crc = crc32c(bytes(data), crc)
        if crc != stored:
            raise _TornRecord(blk)
    # restore the first word of every data BB from the cycle data
    cyc = h.h_cycle_data
    for i in range(dbb):
        j, k = divmod(i, od.XLOG_CYCLE_DATA_SIZE)
        if j == 0:
            word = cyc[k * 4:k * 4 + 4]
        else:
            if j >= hbb:
                raise corrupted(lg.what, f"record at block {blk} lacks extended headers")
            off = j * 512 + 4 + k * 4
            word = hdrs[off:off + 4]
        if i * 512 < len(data):
            data[i * 512:i * 512 + 4] = word[:max(0, min(4, len(data) - i * 512))]
    return h, hbb + dbb, bytes(data)


class _TornRecord(Exception):
    def __init__(self, blk: int) -> None:
        self.blk = blk


def _is_unmount(lg: Log, blk: int) -> bool:
    h, _n, data = _read_record(lg, blk)
    if h.h_num_logops != 1 or len(data) < 12:
        return False
    oh = od.xlog_op_header.unpack_from(data, 0)
    return bool(oh.oh_flags & od.XLOG_UNMOUNT_TRANS)


def find_tail(lg: Log) -> tuple[int, int, bool]:
    """(head, tail, clean) of the log, trimming records torn by a crash."""
    head = find_head(lg)
    for _ in range(_WINDOW):
        rec = find_last_record(lg, head)
        if rec is None:
            c0 = lg.cycle(0)
            if c0 == 0 or head == 0 and lg.cycle(lg.nbb - 1) == 0:
                return head, head, True
            raise corrupted(lg.what, f"no record header before the head at block {head}")
        try:
            h, nbb, _data = _read_record(lg, rec)
        except _TornRecord:
            head = rec
            continue
        if (rec + nbb) % lg.nbb != head:
            head = rec  # the last record is incomplete
            continue
        tail = h.h_tail_lsn & 0xFFFFFFFF
        if tail >= lg.nbb:
            raise corrupted(lg.what, f"tail block {tail} outside the log")
        if _is_unmount(lg, rec):
            return head, head, True
        return head, tail, False
    raise corrupted(lg.what, "every recent record is torn")


# -- gathering transactions ------------------------------------------------------------
class Trans:
    __slots__ = ("tid", "lsn", "header", "items")

    def __init__(self, tid: int, lsn: int) -> None:
        self.tid = tid
        self.lsn = lsn
        self.header = b""
        self.items: list[list[Any]] = []  # [total regions, [region bytes...]]


def gather(lg: Log, head: int, tail: int) -> list[Trans]:
    """Committed transactions from ``tail`` to ``head``, in commit order."""
    active: dict[int, Trans] = {}
    done: list[Trans] = []
    blk = tail
    steps = 0
    while blk != head:
        steps += 1
        if steps > lg.nbb:
            raise corrupted(lg.what, "records do not lead from tail to head")
        try:
            h, nbb, data = _read_record(lg, blk)
        except _TornRecord as e:
            raise corrupted(lg.what, f"record at block {e.blk} fails its checksum") from None
        if h.h_fmt not in (od.XLOG_FMT_LINUX_LE, od.XLOG_FMT_LINUX_BE):
            raise kerr(errno.EOPNOTSUPP, lg.what, f"log written in unknown format {h.h_fmt}")
        order = "<" if h.h_fmt == od.XLOG_FMT_LINUX_LE else ">"
        _process_ops(lg, h, data, active, done, order, blk)
        blk = (blk + nbb) % lg.nbb
    return done


def _process_ops(lg: Log, h: Any, data: bytes, active: dict[int, Trans], done: list[Trans],
                 order: str, blk: int) -> None:
    p = 0
    end = len(data)
    what = f"{lg.what} record at block {blk}"
    for _ in range(h.h_num_logops):
        if p + 12 > end:
            raise corrupted(what, "operation header overruns the record")
        tid, length, clientid, flags, _res = od.xlog_op_header.struct.unpack_from(data, p)
        p += 12
        if p + length > end:
            raise corrupted(what, "operation overruns the record")
        body = data[p:p + length]
        p += length
        if clientid not in (od.XFS_TRANSACTION, od.XFS_LOG):
            raise corrupted(what, f"bad client id {clientid:#x}")
        trans = active.get(tid)
        if flags & od.XLOG_START_TRANS:
            if trans is not None:
                raise corrupted(what, f"transaction {tid:#x} started twice")
            active[tid] = Trans(tid, h.h_lsn)
            continue
        if trans is None:
            continue  # began before the tail
        f = flags & ~od.XLOG_END_TRANS
        if f & od.XLOG_WAS_CONT_TRANS:
            f &= ~od.XLOG_CONTINUE_TRANS
        if f in (0, od.XLOG_CONTINUE_TRANS):
            _add_region(trans, body, order, what)
        elif f == od.XLOG_WAS_CONT_TRANS:
            _continue_region(trans, body, what)
        elif f == od.XLOG_COMMIT_TRANS:
            del active[tid]
            done.append(trans)
        elif f == od.XLOG_UNMOUNT_TRANS:
            del active[tid]
        else:
            raise corrupted(what, f"bad operation flags {flags:#x}")


_TRANS_HDR = 16


def _add_region(trans: Trans, body: bytes, order: str, what: str) -> None:
    if not body:
        return
    if len(trans.header) < _TRANS_HDR and not trans.items:
        if not trans.header:
            magic = struct.unpack_from(order + "I", body, 0)[0] if len(body) >= 4 else 0
            if magic != od.XFS_TRANS_HEADER_MAGIC:
                raise corrupted(what, "bad transaction header")
        trans.header += body
        if len(trans.header) > _TRANS_HDR:
            raise corrupted(what, "transaction header too long")
        if len(trans.header) == _TRANS_HDR:
            trans.items.append([0, []])
        return
    if not trans.items:
        trans.items.append([0, []])
    item = trans.items[-1]
    if item[0] and item[0] == len(item[1]):
        item = [0, []]
        trans.items.append(item)
    if item[0] == 0:
        if len(body) < 4:
            raise corrupted(what, "log item format too short")
        total = struct.unpack_from(order + "H", body, 2)[0]
        if not 0 < total <= _MAX_REGIONS:
            raise corrupted(what, f"log item with {total} regions")
        item[0] = total
    if len(item[1]) >= item[0]:
        raise corrupted(what, "log item region count exceeded")
    item[1].append(body)


def _continue_region(trans: Trans, body: bytes, what: str) -> None:
    if not trans.items:
        trans.header += body
        if len(trans.header) > _TRANS_HDR:
            raise corrupted(what, "transaction header too long")
        if len(trans.header) == _TRANS_HDR:
            trans.items.append([0, []])
        return
    regions = trans.items[-1][1]
    if not regions:
        raise corrupted(what, "continuation without a region")
    regions[-1] = regions[-1] + body


# -- replay ---------------------------------------------------------------------------------
class Replayer:
    """Applies committed transactions to an overlay of the device."""

    def __init__(self, sb: XfsSuper, overlay: OverlayDevice, order: str) -> None:
        self.sb = sb
        self.geo = sb.geo
        self.dev = overlay
        self.order = order
        self.cancelled: dict[tuple[int, int], int] = {}
        self.unverifiable: set[int] = set()
        self.counts: dict[str, int] = {}
        self.ld = struct.Struct(order + "".join(f for _n, f in od.XFS_LOG_DINODE_FIELDS))

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _read(self, daddr: int, nbb: int, what: str) -> bytearray:
        if daddr < 0 or nbb <= 0 or (daddr + nbb) * 512 > self.dev.size:
            raise corrupted(what, f"log item for blocks {daddr}+{nbb} outside the device")
        return self.dev.read(daddr * 512, nbb * 512)

    def _write(self, daddr: int, data: bytearray) -> None:
        self.dev.writev(daddr * 512, [data])

    def _item_type(self, regions: list[bytes]) -> int:
        return struct.unpack_from(self.order + "H", regions[0], 0)[0]  # type: ignore[no-any-return]

    def _buf_format(self, reg: bytes, what: str) -> tuple[int, int, int, list[int]]:
        o = self.order
        if len(reg) < 20:
            raise corrupted(what, "short buffer log format")
        _t, _s, flags, blen, blkno, map_size = struct.unpack_from(o + od.xfs_buf_log_format_fmt,
                                                                  reg, 0)
        nwords = min(map_size, (len(reg) - 20) // 4, od.XFS_BLF_DATAMAP_SIZE)
        bitmap = list(struct.unpack_from(f"{o}{nwords}I", reg, 20))
        return flags, blen, blkno, bitmap

    def pass1(self, transactions: list[Trans]) -> None:
        for t in transactions:
            for _total, regions in t.items:
                if regions and self._item_type(regions) == od.XFS_LI_BUF:
                    flags, blen, blkno, _m = self._buf_format(regions[0], "xfs log buffer item")
                    if flags & od.XFS_BLF_CANCEL:
                        key = (blkno, blen)
                        self.cancelled[key] = self.cancelled.get(key, 0) + 1

    def _is_cancelled(self, blkno: int, blen: int) -> bool:
        return self.cancelled.get((blkno, blen), 0) > 0

    def pass2(self, t: Trans) -> None:
        bufs: list[list[bytes]] = []
        inodes: list[list[bytes]] = []
        ibufs: list[list[bytes]] = []
        cancels: list[list[bytes]] = []
        for _total, regions in t.items:
            if not regions:
                continue
            typ = self._item_type(regions)
            if typ == od.XFS_LI_BUF:
                flags = self._buf_format(regions[0], "xfs log buffer item")[0]
                if flags & od.XFS_BLF_CANCEL:
                    cancels.insert(0, regions)
                elif flags & od.XFS_BLF_INODE_BUF:
                    ibufs.insert(0, regions)
                else:
                    bufs.append(regions)
            elif typ == od.XFS_LI_ICREATE:
                bufs.append(regions)
            else:
                inodes.append(regions)
        for regions in bufs + inodes + ibufs + cancels:
            typ = self._item_type(regions)
            if typ == od.XFS_LI_BUF:
                self._buffer(regions, t.lsn)
            elif typ == od.XFS_LI_INODE:
                self._inode(regions, t.lsn)
            elif typ == od.XFS_LI_ICREATE:
                self._icreate(regions)
            elif typ in _INTENTS:
                self._count("intents skipped")
            else:
                raise corrupted("xfs log", f"unknown log item type {typ:#x}")

    # -- buffers ---------------------------------------------------------------------------
    def _buffer(self, regions: list[bytes], lsn: int) -> None:
        what = "xfs log buffer item"
        flags, blen, blkno, bitmap = self._buf_format(regions[0], what)
        key = (blkno, blen)
        if flags & od.XFS_BLF_CANCEL:
            left = self.cancelled.get(key, 0) - 1
            if left > 0:
                self.cancelled[key] = left
            else:
                self.cancelled.pop(key, None)
            return
        if self._is_cancelled(blkno, blen):
            self._count("cancelled buffers")
            return
        if flags & (od.XFS_BLF_UDQUOT_BUF | od.XFS_BLF_PDQUOT_BUF | od.XFS_BLF_GDQUOT_BUF):
            self._count("quota buffers skipped")
            return
        data = self._read(blkno, blen, what)
        if flags & od.XFS_BLF_INODE_BUF:
            self._inode_buffer(data, bitmap, regions, what)
            self._write(blkno, data)
            self._count("inode buffers")
            return
        disk_lsn = self._buf_lsn(data)
        if disk_lsn and disk_lsn != 0xFFFFFFFFFFFFFFFF and disk_lsn > lsn:
            self._count("buffers already newer")
            return
        i = 1
        for bit, nbits in _runs(bitmap):
            if i >= len(regions):
                raise corrupted(what, f"buffer at {blkno} lacks logged regions")
            reg = regions[i]
            nbits = min(nbits, len(reg) >> od.XFS_BLF_SHIFT)
            start = bit << od.XFS_BLF_SHIFT
            size = nbits << od.XFS_BLF_SHIFT
            if start + size > len(data):
                raise corrupted(what, f"logged region beyond buffer at {blkno}")
            data[start:start + size] = reg[:size]
            i += 1
        self._fix_crc(data, blkno)
        self._write(blkno, data)
        self._count("buffers")

    def _inode_buffer(self, data: bytearray, bitmap: list[int], regions: list[bytes],
                      what: str) -> None:
        """Replay only the di_next_unlinked fields of an inode buffer."""
        isz = self.geo.inodesize
        logged: list[tuple[int, int, bytes]] = []
        i = 1
        for bit, nbits in _runs(bitmap):
            if i >= len(regions):
                raise corrupted(what, "inode buffer lacks logged regions")
            logged.append((bit << od.XFS_BLF_SHIFT, (bit + nbits) << od.XFS_BLF_SHIFT, regions[i]))
            i += 1
        for k in range(len(data) // isz):
            off = k * isz + od.XFS_DINODE_NEXT_UNLINKED_OFF
            for s, e, reg in logged:
                if s <= off and off + 4 <= e and off - s + 4 <= len(reg):
                    data[off:off + 4] = reg[off - s:off - s + 4]
                    if self.geo.crc:
                        update_crc(memoryview(data)[k * isz:(k + 1) * isz], od.XFS_DINODE_CRC_OFF)
                    break

    def _buf_lsn(self, data: bytearray) -> int:
        """The LSN stamped in a v5 metadata buffer, 0 when it has none (xlog_recover_get_buf_lsn)."""
        if not self.geo.crc or len(data) < 64:
            return 0
        m32 = _u32.unpack_from(data, 0)[0]
        off = _LSN32.get(m32)
        if off is None and m32 in od.SBLOCK_CRC_MAGICS:
            off = 24
        if off is None and _u16.unpack_from(data, 8)[0] in od.DA3_MAGICS:
            off = 24
        if off is None:
            return 0
        return _u64.unpack_from(data, off)[0]  # type: ignore[no-any-return]

    def _fix_crc(self, data: bytearray, daddr: int) -> None:
        """Recompute the CRC the writer would have stamped (v5 only)."""
        geo = self.geo
        if not geo.crc:
            return
        m32 = _u32.unpack_from(data, 0)[0]
        m16 = _u16.unpack_from(data, 0)[0]
        n = len(data)
        mv = memoryview(data)
        if m32 == od.XFS_SB_MAGIC:
            update_crc(mv[:geo.sectsize], od.XFS_SB_CRC_OFF)
        elif m32 == od.XFS_AGF_MAGIC:
            update_crc(mv[:geo.sectsize], od.XFS_AGF_CRC_OFF)
        elif m32 == od.XFS_AGI_MAGIC:
            update_crc(mv[:geo.sectsize], od.XFS_AGI_CRC_OFF)
        elif m32 == od.XFS_AGFL_MAGIC:
            update_crc(mv[:geo.sectsize], od.XFS_AGFL_CRC_OFF)
        elif m32 in od.SBLOCK_CRC_MAGICS:
            update_crc(mv, od.XFS_BTREE_SBLOCK_CRC_OFF)
        elif m32 == od.XFS_BMAP_CRC_MAGIC:
            update_crc(mv, od.XFS_BTREE_LBLOCK_CRC_OFF)
        elif m32 == od.XFS_SYMLINK_MAGIC:
            update_crc(mv, od.XFS_SYMLINK_CRC_OFF)
        elif m32 == od.XFS_ATTR3_RMT_MAGIC:
            bs = geo.blocksize
            for off in range(0, n - bs + 1, bs):
                if _u32.unpack_from(data, off)[0] == od.XFS_ATTR3_RMT_MAGIC:
                    update_crc(mv[off:off + bs], od.XFS_ATTR3_RMT_CRC_OFF)
        elif m32 in (od.XFS_DIR3_BLOCK_MAGIC, od.XFS_DIR3_DATA_MAGIC, od.XFS_DIR3_FREE_MAGIC):
            update_crc(mv, od.XFS_DIR3_BLK_HDR_CRC_OFF)
            if n < geo.dirblksize:
                self.unverifiable.add(daddr)
        elif _u16.unpack_from(data, 8)[0] in od.DA3_MAGICS:
            update_crc(mv, od.XFS_DA3_BLKINFO_CRC_OFF)
            if n < geo.dirblksize and _u16.unpack_from(data, 8)[0] != od.XFS_ATTR3_LEAF_MAGIC:
                self.unverifiable.add(daddr)
        elif m16 == od.XFS_DINODE_MAGIC:
            isz = geo.inodesize
            for off in range(0, n - isz + 1, isz):
                if _u16.unpack_from(data, off)[0] == od.XFS_DINODE_MAGIC:
                    update_crc(mv[off:off + isz], od.XFS_DINODE_CRC_OFF)

    # -- inodes ----------------------------------------------------------------------------
    def _inode(self, regions: list[bytes], lsn: int) -> None:
        geo = self.geo
        o = self.order
        what = "xfs log inode item"
        fmt = regions[0]
        if len(fmt) >= 56:
            (_t, size, fields, asize, dsize, _pad, ino, ilf_u, blkno, ilen,
             boffset) = struct.unpack_from(o + od.xfs_inode_log_format_fmt, fmt, 0)
        elif len(fmt) >= 52:
            (_t, size, fields, asize, dsize, ino, ilf_u, blkno, ilen,
             boffset) = struct.unpack_from(o + od.xfs_inode_log_format_32_fmt, fmt, 0)
        else:
            raise corrupted(what, "short inode log format")
        if self._is_cancelled(blkno, ilen):
            self._count("cancelled inodes")
            return
        if len(regions) < 2:
            raise corrupted(what, f"inode {ino} item lacks its core")
        data = self._read(blkno, ilen, what)
        isz = geo.inodesize
        if boffset < 0 or boffset + isz > len(data):
            raise corrupted(what, f"inode {ino} offset {boffset} outside its buffer")
        dip = memoryview(data)[boffset:boffset + isz]
        if _u16.unpack_from(dip, 0)[0] != od.XFS_DINODE_MAGIC:
            raise corrupted(what, f"inode {ino}: the buffer holds no inode at {boffset}")
        ldip = regions[1]
        core = od.XFS_LOG_DINODE_V3_SIZE if geo.crc else 96
        if len(ldip) < core:
            raise corrupted(what, f"inode {ino}: logged core too short")
        ld = self.ld.unpack_from(ldip.ljust(176, b"\0"), 0)
        names = [n for n, _f in od.XFS_LOG_DINODE_FIELDS]
        rec = dict(zip(names, ld, strict=True))
        if rec["di_magic"] != od.XFS_DINODE_MAGIC:
            raise corrupted(what, f"inode {ino}: bad logged inode magic")
        if dip[4] >= 3:
            disk_lsn = _u64.unpack_from(dip, od.XFS_DINODE_LSN_OFF)[0]
            if disk_lsn and disk_lsn != 0xFFFFFFFFFFFFFFFF and disk_lsn > lsn:
                self._count("inodes already newer")
                return
        else:
            disk_fi = _u16.unpack_from(dip, od.XFS_DINODE_FLUSHITER_OFF)[0]
            log_fi = self._flushiter(rec)
            if log_fi < disk_fi and not (disk_fi == od.XFS_DI_MAX_FLUSH
                                         and log_fi < od.XFS_DI_MAX_FLUSH >> 1):
                self._count("inodes already newer")
                return
        self._core_to_disk(rec, dip, core, lsn)
        # forks: region 2 is the data fork when logged, then the attribute fork
        literal = geo.dinode_core
        forkoff = dip[82]
        dsize_disk = forkoff * 8 if forkoff else isz - literal
        idx = 2
        dfields = fields & (od.XFS_ILOG_DDATA | od.XFS_ILOG_DEXT | od.XFS_ILOG_DBROOT)
        if dfields and idx < len(regions):
            src = regions[idx]
            idx += 1
            if dfields & od.XFS_ILOG_DBROOT:
                self._broot(src, dip, literal, dsize_disk, what)
            else:
                if len(src) > dsize_disk:
                    raise corrupted(what, f"inode {ino}: logged data fork larger than the fork")
                dip[literal:literal + len(src)] = src
        elif fields & od.XFS_ILOG_DEV:
            rdev = struct.unpack_from(o + "I", ilf_u, 0)[0]
            _u32.pack_into(dip, literal, rdev)
        afields = fields & (od.XFS_ILOG_ADATA | od.XFS_ILOG_AEXT | od.XFS_ILOG_ABROOT)
        if afields and idx < len(regions) and forkoff:
            src = regions[idx]
            aoff = literal + forkoff * 8
            asz = isz - aoff
            if afields & od.XFS_ILOG_ABROOT:
                self._broot(src, dip, aoff, asz, what)
            else:
                if len(src) > asz:
                    raise corrupted(what, f"inode {ino}: logged attribute fork too large")
                dip[aoff:aoff + len(src)] = src
        if geo.crc:
            update_crc(dip, od.XFS_DINODE_CRC_OFF)
        self._write(blkno, data)
        self._count("inodes")

    def _flushiter(self, rec: dict[str, Any]) -> int:
        v = rec["di_big_nextents"]
        return (v >> 48) if self.order == "<" else (v & 0xFFFF)  # type: ignore[no-any-return]

    def _ts(self, v: int, big: bool) -> int:
        if big or self.order == ">":
            return v
        return ((v & 0xFFFFFFFF) << 32) | (v >> 32)

    def _core_to_disk(self, rec: dict[str, Any], dip: memoryview, core: int, lsn: int) -> None:
        """xfs_log_dinode_to_disk: the logged core in big-endian form; next_unlinked kept."""
        big = bool(rec["di_flags2"] & od.XFS_DIFLAG2_BIGTIME) and rec["di_version"] >= 3
        out = dict(rec)
        out["di_pad3"] = 0
        for k in ("di_atime", "di_mtime", "di_ctime", "di_crtime"):
            out[k] = self._ts(rec[k], big)
        if not (rec["di_version"] >= 3 and rec["di_flags2"] & od.XFS_DIFLAG2_NREXT64):
            out["di_big_nextents"] = self._flushiter(rec)
        out["di_next_unlinked"] = _u32.unpack_from(dip, od.XFS_DINODE_NEXT_UNLINKED_OFF)[0]
        out["di_lsn"] = lsn
        packed = bytearray(od.xfs_dinode.struct.pack(*[out[n if n != "di_pad3" else "di_pad3"]
                                                      for n, _f in od.XFS_LOG_DINODE_FIELDS]))
        dip[:core] = packed[:core]

    def _broot(self, src: bytes, dip: memoryview, off: int, size: int, what: str) -> None:
        """xfs_bmbt_to_bmdr: an in-core btree root block to the on-disk fork root."""
        hdr = od.XFS_BTREE_LBLOCK_CRC_LEN if self.geo.crc else od.XFS_BTREE_LBLOCK_LEN
        if len(src) < hdr:
            raise corrupted(what, "logged btree root too short")
        level, numrecs = struct.unpack_from(">HH", src, 4)
        inmax = (len(src) - hdr) // 16
        dmax = (size - 4) // 16
        if numrecs > min(inmax, dmax):
            raise corrupted(what, f"logged btree root with {numrecs} records")
        keys = src[hdr:hdr + numrecs * 8]
        ptrs = src[hdr + inmax * 8:hdr + inmax * 8 + numrecs * 8]
        struct.pack_into(">HH", dip, off, level, numrecs)
        dip[off + 4:off + 4 + len(keys)] = keys
        p = off + 4 + dmax * 8
        dip[p:p + len(ptrs)] = ptrs

    # -- inode allocation ------------------------------------------------------------------
    def _icreate(self, regions: list[bytes]) -> None:
        geo = self.geo
        what = "xfs log icreate item"
        reg = regions[0]
        if len(reg) < od.xfs_icreate_log.size:
            raise corrupted(what, "short icreate item")
        icl = od.xfs_icreate_log.unpack_from(reg, 0)
        agno, agbno, count, isize, length, gen = (icl.icl_ag, icl.icl_agbno, icl.icl_count,
                                                  icl.icl_isize, icl.icl_length, icl.icl_gen)
        if agno >= geo.agcount or not 0 < length or agbno + length > geo.ag_length(agno) \
                or isize != geo.inodesize or not 0 < count <= 64 \
                or count != length * geo.inopblock:
            raise corrupted(what, f"bad icreate item (AG {agno} block {agbno}, {count} inodes)")
        bpc = max(1, geo.blocks_per_cluster)
        start = agno * geo.agblocks + agbno
        shift = geo.blocklog - 9
        clusters = [(start + k, min(bpc, length - k)) for k in range(0, length, bpc)]
        cancelled = [self._is_cancelled((b << shift), n << shift) for b, n in clusters]
        if all(cancelled):
            self._count("cancelled icreates")
            return
        version = 3 if geo.crc else 2
        isz = geo.inodesize
        for (blk, n), skip in zip(clusters, cancelled, strict=True):
            if skip:
                continue
            data = bytearray(n * geo.blocksize)
            first_agino = (agbno + blk - start) << geo.inopblog
            for k in range(len(data) // isz):
                off = k * isz
                struct.pack_into(">HHBB", data, off, od.XFS_DINODE_MAGIC, 0, version, 0)
                _u32.pack_into(data, off + 92, gen)
                _u32.pack_into(data, off + od.XFS_DINODE_NEXT_UNLINKED_OFF, od.NULLAGINO)
                if version == 3:
                    ino = (agno << geo.agino_log) | (first_agino + k)
                    _u64.pack_into(data, off + 152, ino)
                    data[off + 160:off + 176] = geo.meta_uuid
                    update_crc(memoryview(data)[off:off + isz], od.XFS_DINODE_CRC_OFF)
            self._write(blk << shift, data)
        self._count("icreates")


_LSN32 = {
    od.XFS_SB_MAGIC: 240, od.XFS_AGF_MAGIC: 208, od.XFS_AGI_MAGIC: 320, od.XFS_AGFL_MAGIC: 24,
    od.XFS_BMAP_CRC_MAGIC: 32, od.XFS_DIR3_BLOCK_MAGIC: 16, od.XFS_DIR3_DATA_MAGIC: 16,
    od.XFS_DIR3_FREE_MAGIC: 16, od.XFS_ATTR3_RMT_MAGIC: 40, od.XFS_SYMLINK_MAGIC: 40,
}
_INTENTS = frozenset((od.XFS_LI_EFI, od.XFS_LI_EFD, od.XFS_LI_IUNLINK, od.XFS_LI_DQUOT,
                      od.XFS_LI_QUOTAOFF, od.XFS_LI_RUI, od.XFS_LI_RUD, od.XFS_LI_CUI,
                      od.XFS_LI_CUD, od.XFS_LI_BUI, od.XFS_LI_BUD, od.XFS_LI_ATTRI,
                      od.XFS_LI_ATTRD, od.XFS_LI_XMI, od.XFS_LI_XMD, 0x124A, 0x124B, 0x124C,
                      0x124D, 0x124E, 0x124F))


def _runs(bitmap: list[int]) -> list[tuple[int, int]]:
    """Runs (first bit, length) of set bits in the dirty-chunk bitmap."""
    runs: list[tuple[int, int]] = []
    start = -1
    total = len(bitmap) * 32
    for b in range(total + 1):
        on = b < total and bitmap[b >> 5] >> (b & 31) & 1
        if on and start < 0:
            start = b
        elif not on and start >= 0:
            runs.append((start, b - start))
            start = -1
    return runs


def recover(sb: XfsSuper, norecovery: bool = False) -> OverlayDevice | None:
    """Find the log's head and tail; replay a dirty log into an overlay.

    Returns the overlay device (or None when the log is clean, or when
    ``norecovery`` asks to see the unrecovered metadata). Raises EUCLEAN for a
    damaged log, EOPNOTSUPP for a log this driver cannot replay.
    """
    geo = sb.geo
    base = sb.xdev
    lg = Log(sb, base)
    head, tail, clean = find_tail(lg)
    if clean:
        return None
    if norecovery:
        log.warning("xfs: %s: dirty log not replayed (norecovery): metadata may be stale",
                    base.name)
        return None
    if geo.log_incompat & ~od.XFS_SB_FEAT_LOG_INCOMPAT_XATTRS:
        raise kerr(errno.EOPNOTSUPP, f"/dev/{base.name}",
                   f"xfs: dirty log with unknown log features {geo.log_incompat:#x}")
    transactions = gather(lg, head, tail)
    h = od.xlog_rec_header.unpack_from(lg.read(tail, 1), 0) if tail != head else None
    order = "<" if h is None or h.h_fmt == od.XLOG_FMT_LINUX_LE else ">"
    overlay = OverlayDevice(base, geo.blocksize)
    rp = Replayer(sb, overlay, order)
    rp.pass1(transactions)
    for t in transactions:
        rp.pass2(t)
    overlay.unverifiable = rp.unverifiable
    sb.recovered = len(transactions)
    log.info("xfs: %s: log recovered in memory: %d transactions from block %d to %d (%s)",
             base.name, len(transactions), tail, head,
             ", ".join(f"{v} {k}" for k, v in sorted(rp.counts.items())))
    return overlay
