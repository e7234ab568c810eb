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


# -- write side: inline inodes become block-mapped before they change ---------------------------
def uninline(inode: Ext4Inode) -> None:
    """Move an inline file's or directory's content into blocks (extent-mapped), as ext4 does
    when inline data outgrows the inode; afterwards the write path treats it like any other."""
    from . import dirwrite as dw
    from . import file as f
    from . import xattr as xa
    from .dir import get_cache
    from .extents import empty_root
    from .ondisk import EXT4_EXTENTS_FL, EXT4_INLINE_DATA_FL

    if not inode.inline:
        return
    sb = inode.sb
    entries = None
    parent = 0
    content = b""
    if inode.is_dir:
        dc = get_cache(inode)
        parent = dc.entries[1][1]
        entries = dc.entries[2:]
    else:
        content = read_inline(inode)
    items = [it for it in xa.current_items(inode)
             if not (it[0] == EXT4_XATTR_INDEX_SYSTEM and it[1] == b"data")]
    inode.i_flags = (inode.i_flags & ~EXT4_INLINE_DATA_FL) | EXT4_EXTENTS_FL
    inode.i_block = empty_root()
    inode._runs, inode._starts, inode.tblocks = [], [], []
    inode.dir_cache = inode.dir_state = None
    xa.store_xattrs(inode, items)
    size = inode.size
    inode.size = 0
    if entries is None:
        if content:
            f.write(inode, 0, content)
        inode.size = size
    else:
        dw.init_block_dir(inode, parent, entries)
    sb.dirty_inode(inode)
