"""The data regions of a file with holes, by SEEK_DATA/SEEK_HOLE: one walk for every
tool and either end (``os.lseek`` on the host, ``kernel.sys.lseek`` in an image)."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from os import SEEK_DATA, SEEK_HOLE  # the host's values: Linux's, which the kernel's are too


def data_regions(lseek: Callable[[int, int, int], int], fd: int,
                 size: int) -> Iterator[tuple[int, int]]:
    """Data regions [start, end) of the first ``size`` bytes; the whole file if the
    filesystem knows no holes (EINVAL, EOPNOTSUPP)."""
    pos = 0
    while pos < size:
        try:
            start = lseek(fd, pos, SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole up to the end
                return
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP) and pos == 0:
                yield 0, size
                return
            raise
        if start >= size:
            return
        try:
            end = lseek(fd, start, SEEK_HOLE)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            end = size
        end = min(end, size)
        if end <= start:
            return
        yield start, end
        pos = end
