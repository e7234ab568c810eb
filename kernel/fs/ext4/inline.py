"""Inline data (fs/ext4/inline.c, read side): small files and directories in the inode.

With the inline_data feature an inode flagged EXT4_INLINE_DATA_FL keeps its
first 60 bytes in ``i_block`` and the rest in the value of the in-inode
attribute ``system.data``. An inline directory starts with the parent's
inode number (4 bytes) instead of "." and ".." entries; directory entries
fill the rest of ``i_block`` and, separately, the ``system.data`` value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import corrupted
from .ondisk import EXT4_MIN_INLINE_DATA_SIZE, EXT4_XATTR_INDEX_SYSTEM
from .xattr import ibody_entries

if TYPE_CHECKING:
    from .inode import Ext4Inode


def inline_parts(inode: Ext4Inode) -> tuple[bytes, bytes]:
    """(``i_block``, ``system.data`` value); EUCLEAN if the attribute is malformed."""
    extra = b""
    for index, name, value, vinum, _size in ibody_entries(inode):
        if index == EXT4_XATTR_INDEX_SYSTEM and name == b"data":
            if value is None or vinum:
                raise corrupted(f"ext4 inode {inode.ino}", "inline data stored out of the inode")
            extra = value
            break
    return inode.i_block, extra


def read_inline(inode: Ext4Inode) -> bytes:
    """The whole content of an inline file (``i_size`` bytes)."""
    head, extra = inline_parts(inode)
    size = inode.size
    if size > EXT4_MIN_INLINE_DATA_SIZE + len(extra):
        raise corrupted(f"ext4 inode {inode.ino}",
                        f"inline data size {size} exceeds the {EXT4_MIN_INLINE_DATA_SIZE + len(extra)}"
                        " bytes stored")
    return (head + extra)[:size]
