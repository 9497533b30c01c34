"""Reserving a file's disk blocks just before they are written: Linux `fallocate(2)`, mode 0.

Why: writing into blocks reserved beforehand costs ext4 about half the CPU of writing into a
hole of a sparse file, where every page's block is reserved on its own (delayed allocation);
some write sizes into holes cost several times more still. A fill reserves each segment's next
stretch as it goes (`SegmentWriter`), not the whole blob at once, so the room a fill holds stays
close to what it wrote and a disk filled behind its back still ends it with ENOSPC mid-way.

The system call is made directly: `os.posix_fallocate` would, on a filesystem without it (NFS
before 4.2, some FUSE filesystems), write a byte into every block instead — a cost, not a
saving. Where the call is missing or unsupported, nothing is reserved and writes go on as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _find_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    # fallocate64 takes 64-bit offsets everywhere; plain fallocate only where off_t is 64-bit
    names = ("fallocate64", "fallocate") if ctypes.sizeof(ctypes.c_long) == 8 else ("fallocate64",)
    for name in names:
        function = getattr(libc, name, None)
        if function is not None:
            function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            function.restype = ctypes.c_int
            return function
    return None


_fallocate = _find_fallocate()


def reserve_blocks(fd: int, offset: int, length: int) -> bool:
    """Allocate the blocks of [offset, offset + length), a range within the file's size, without
    changing its bytes; False where this filesystem or system cannot. Raises OSError (ENOSPC:
    the disk is full). Blocking: call it off the event loop."""
    if _fallocate is None or length <= 0:
        return False
    while _fallocate(fd, 0, offset, length) != 0:
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        if err in _UNSUPPORTED:
            return False
        raise OSError(err, os.strerror(err))
    return True
