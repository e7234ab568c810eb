"""Linux user-space ABI constants (the values of x86-64 Linux's uapi headers).

Front ends use these with ``kernel.sys``; they are the same numbers the host
kernel uses, so an ``os.O_RDONLY`` and a ``uapi.O_RDONLY`` are interchangeable.
"""

from __future__ import annotations

# open(2) flags (include/uapi/asm-generic/fcntl.h)
O_ACCMODE = 0o3
O_RDONLY = 0o0
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_EXCL = 0o200
O_NOCTTY = 0o400
O_TRUNC = 0o1000
O_APPEND = 0o2000
O_NONBLOCK = 0o4000
O_DSYNC = 0o10000
O_DIRECT = 0o40000
O_LARGEFILE = 0o100000
O_DIRECTORY = 0o200000
O_NOFOLLOW = 0o400000
O_NOATIME = 0o1000000
O_CLOEXEC = 0o2000000
O_SYNC = 0o4010000
O_PATH = 0o10000000
O_TMPFILE = 0o20200000

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_EACCESS = 0x200  # faccessat only

# file types and permission bits (include/uapi/linux/stat.h)
S_IFMT = 0o170000
S_IFSOCK = 0o140000
S_IFLNK = 0o120000
S_IFREG = 0o100000
S_IFBLK = 0o060000
S_IFDIR = 0o040000
S_IFCHR = 0o020000
S_IFIFO = 0o010000
S_ISUID = 0o4000
S_ISGID = 0o2000
S_ISVTX = 0o1000
S_IRWXUGO = 0o777
S_IALLUGO = 0o7777

# directory entry types (d_type)
DT_UNKNOWN = 0
DT_FIFO = 1
DT_CHR = 2
DT_DIR = 4
DT_BLK = 6
DT_REG = 8
DT_LNK = 10
DT_SOCK = 12


def S_ISDIR(mode: int) -> bool:
    return mode & S_IFMT == S_IFDIR


def S_ISREG(mode: int) -> bool:
    return mode & S_IFMT == S_IFREG


def S_ISLNK(mode: int) -> bool:
    return mode & S_IFMT == S_IFLNK


def S_ISCHR(mode: int) -> bool:
    return mode & S_IFMT == S_IFCHR


def S_ISBLK(mode: int) -> bool:
    return mode & S_IFMT == S_IFBLK


def S_ISFIFO(mode: int) -> bool:
    return mode & S_IFMT == S_IFIFO


def S_ISSOCK(mode: int) -> bool:
    return mode & S_IFMT == S_IFSOCK


def IFTODT(mode: int) -> int:
    return (mode & S_IFMT) >> 12


def DTTOIF(dtype: int) -> int:
    return dtype << 12


# lseek(2)
SEEK_SET = 0
SEEK_CUR = 1
SEEK_END = 2
SEEK_DATA = 3
SEEK_HOLE = 4

# renameat2(2)
RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1
RENAME_WHITEOUT = 1 << 2

# fallocate(2)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_NO_HIDE_STALE = 0x04
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
FALLOC_FL_UNSHARE_RANGE = 0x40

# setxattr(2)
XATTR_CREATE = 0x1
XATTR_REPLACE = 0x2
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_LIST_MAX = 65536

# utimensat(2)
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

# access(2)
F_OK = 0
X_OK = 1
W_OK = 2
R_OK = 4

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_RELATIME = 1 << 21
MS_LAZYTIME = 1 << 25

# umount2(2)
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# statx(2)
STATX_TYPE = 0x1
STATX_MODE = 0x2
STATX_NLINK = 0x4
STATX_UID = 0x8
STATX_GID = 0x10
STATX_ATIME = 0x20
STATX_MTIME = 0x40
STATX_CTIME = 0x80
STATX_INO = 0x100
STATX_SIZE = 0x200
STATX_BLOCKS = 0x400
STATX_BASIC_STATS = 0x7FF
STATX_BTIME = 0x800
STATX_MNT_ID = 0x1000
STATX_ALL = 0xFFF

# limits
NAME_MAX = 255
PATH_MAX = 4096
MAXSYMLINKS = 40
LINK_MAX = 65000  # ext4's EXT4_LINK_MAX

# POSIX ACL xattr format (include/uapi/linux/posix_acl_xattr.h)
POSIX_ACL_XATTR_VERSION = 0x0002
ACL_USER_OBJ = 0x01
ACL_USER = 0x02
ACL_GROUP_OBJ = 0x04
ACL_GROUP = 0x08
ACL_MASK = 0x10
ACL_OTHER = 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF
XATTR_NAME_POSIX_ACL_ACCESS = b"system.posix_acl_access"
XATTR_NAME_POSIX_ACL_DEFAULT = b"system.posix_acl_default"


def major(dev: int) -> int:
    """Linux's new_decode_dev: 12-bit major split over two fields."""
    return ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)


def minor(dev: int) -> int:
    return (dev & 0xFF) | ((dev >> 12) & ~0xFF)


def makedev(ma: int, mi: int) -> int:
    return ((ma & 0xFFF) << 8) | (mi & 0xFF) | ((mi & ~0xFF) << 12) | ((ma & ~0xFFF) << 32)
