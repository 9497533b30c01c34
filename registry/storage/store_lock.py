"""One server per models folder: an exclusive `flock` on `<models>/corral.lock` for its lifetime.

Two servers on one folder would each reconcile the folder against the catalogue and delete what
the other is writing. The kernel drops a `flock` when its holder dies, even by SIGKILL, so a
crashed server never leaves a lock that needs clearing by hand. The file itself only says who
holds it (pid, listen URL, start time), so that a refused server can name the running one; it is
never deleted, since unlinking a lock file races with the next server opening it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

LOCK_NAME = "corral.lock"


class StoreInUse(Exception):
    """Another live server holds the models folder; the message names it."""


class StoreLock:
    """The held lock; `release` (or the process ending) lets the next server in."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, models: Path, listen_url: str) -> StoreLock:
        """Take the lock without waiting, or raise StoreInUse naming the holder.

        Blocking (a small file write): call it off the event loop.
        """
        models.mkdir(parents=True, exist_ok=True)
        path = models / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreInUse(f"the models folder {models} is in use by another corral server ({holder})") from None
        except BaseException:
            os.close(fd)
            raise
        since = time.strftime("%Y-%m-%d %H:%M:%S %z")
        record = json.dumps({"pid": os.getpid(), "url": listen_url, "since": since}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
        return cls(path, fd)

    def release(self) -> None:
        """Empty the file (nobody holds it now) and drop the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def _read_holder(fd: int) -> str:
    """What the holder wrote about itself; it writes right after locking, so this is rarely empty."""
    try:
        record = json.loads(os.pread(fd, 4096, 0))
        return f"pid {record['pid']}, {record['url']}, since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "it has not said who it is yet"
