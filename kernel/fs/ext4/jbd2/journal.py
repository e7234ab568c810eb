"""An internal jbd2 journal: its superblock and its blocks (fs/jbd2/journal.c, read side).

The journal lives in an inode (normally 8); journal block ``n`` is that
inode's logical block ``n``. Blocks are read around the buffer cache, a
chunk of contiguous blocks at a time, because recovery reads the log once
from start to end.
"""

from __future__ import annotations

import bisect
import errno
from typing import TYPE_CHECKING

from ....errors import EFSBADCRC, corrupted, kerr
from ....lib.crc import crc32c_raw
from .ondisk import (
    JBD2_CRC32C_CHKSUM,
    JBD2_FEATURE_INCOMPAT_64BIT,
    JBD2_FEATURE_INCOMPAT_CSUM_V2,
    JBD2_FEATURE_INCOMPAT_CSUM_V3,
    JBD2_FEATURE_INCOMPAT_FAST_COMMIT,
    JBD2_KNOWN_INCOMPAT,
    JBD2_MAGIC_NUMBER,
    JBD2_SUPERBLOCK_V1,
    JBD2_SUPERBLOCK_V2,
    JSB_CHECKSUM_OFFSET,
    journal_superblock,
)

if TYPE_CHECKING:
    from ....block.blkdev import BlockDevice
    from ..inode import Ext4Inode

_CHUNK = 64  # journal blocks read per request


class Journal:
    """A loaded journal superblock and a reader for the journal's blocks.

    EUCLEAN if the superblock is malformed, EBADMSG if its checksum fails,
    EOPNOTSUPP for features recovery cannot honour.
    """

    def __init__(self, inode: Ext4Inode, dev: BlockDevice) -> None:
        self.inode = inode
        self.dev = dev
        self.blocksize = bs = inode.sb.blocksize
        runs = [r for r in inode.runs() if not r[3]]
        self._runs = runs
        self._starts = [r[0] for r in runs]
        self._chunk_start = -1
        self._chunk: list[bytes] = []
        nblocks = inode.size // bs
        raw = self.read(0)
        sb = journal_superblock.unpack_from(raw, 0)
        what = f"jbd2 superblock (journal inode {inode.ino})"
        if sb.h_magic != JBD2_MAGIC_NUMBER or sb.h_blocktype not in (JBD2_SUPERBLOCK_V1,
                                                                      JBD2_SUPERBLOCK_V2):
            raise corrupted(what, "bad magic or block type")
        if sb.s_blocksize != bs:
            raise corrupted(what, f"journal block size {sb.s_blocksize} differs from the "
                            f"filesystem's {bs}")
        if not 0 < sb.s_first < sb.s_maxlen or sb.s_maxlen > nblocks:
            raise corrupted(what, f"bad geometry: first {sb.s_first}, maxlen {sb.s_maxlen}, "
                            f"inode holds {nblocks} blocks")
        v2 = sb.h_blocktype == JBD2_SUPERBLOCK_V2
        self.incompat = sb.s_feature_incompat if v2 else 0
        self.compat = sb.s_feature_compat if v2 else 0
        if self.incompat & ~JBD2_KNOWN_INCOMPAT:
            raise kerr(errno.EOPNOTSUPP, what,
                       f"unknown journal features {self.incompat & ~JBD2_KNOWN_INCOMPAT:#x}")
        self.has_64bit = bool(self.incompat & JBD2_FEATURE_INCOMPAT_64BIT)
        self.csum_v3 = bool(self.incompat & JBD2_FEATURE_INCOMPAT_CSUM_V3)
        self.csum = bool(self.incompat & (JBD2_FEATURE_INCOMPAT_CSUM_V2
                                          | JBD2_FEATURE_INCOMPAT_CSUM_V3))
        self.fast_commit = bool(self.incompat & JBD2_FEATURE_INCOMPAT_FAST_COMMIT)
        if self.csum:
            if sb.s_checksum_type != JBD2_CRC32C_CHKSUM:
                raise corrupted(what, f"unknown checksum type {sb.s_checksum_type}")
            mv = bytearray(raw[:1024])
            mv[JSB_CHECKSUM_OFFSET:JSB_CHECKSUM_OFFSET + 4] = bytes(4)
            if crc32c_raw(0xFFFFFFFF, mv) != sb.s_checksum:
                raise corrupted(what, "checksum mismatch", EFSBADCRC)
            self.csum_seed = crc32c_raw(0xFFFFFFFF, sb.s_uuid)
        else:
            self.csum_seed = 0
        self.sb = sb
        self.first = sb.s_first
        self.maxlen = sb.s_maxlen
        fc = sb.s_num_fc_blks if self.fast_commit else 0
        if self.fast_commit and not fc:
            fc = 256  # JBD2_DEFAULT_FAST_COMMIT_BLOCKS
        self.last = self.maxlen - fc  # the log is [first, last)
        if self.last <= self.first:
            raise corrupted(what, "no room for the log")
        self.sequence = sb.s_sequence
        self.start = sb.s_start
        if self.start and not self.first <= self.start < self.last:
            raise corrupted(what, f"log start {self.start} outside [{self.first}, {self.last})")

    def _pblk(self, n: int) -> tuple[int, int]:
        """(physical block, blocks contiguous from it) of journal block ``n``."""
        i = bisect.bisect_right(self._starts, n) - 1
        if i >= 0:
            s, c, p, _u = self._runs[i]
            if n < s + c:
                return p + n - s, s + c - n
        raise corrupted(f"jbd2 journal inode {self.inode.ino}", f"journal block {n} is not mapped")

    def read(self, n: int) -> bytes:
        """Journal block ``n`` (EIO if unreadable)."""
        off = n - self._chunk_start
        if 0 <= off < len(self._chunk):
            return self._chunk[off]
        pblk, avail = self._pblk(n)
        count = min(avail, _CHUNK)
        bs = self.blocksize
        data = self.dev.read(pblk * bs, count * bs)
        self._chunk = [bytes(data[i * bs:(i + 1) * bs]) for i in range(count)]
        self._chunk_start = n
        return self._chunk[0]

    def wrap(self, n: int) -> int:
        return n - (self.last - self.first) if n >= self.last else n
