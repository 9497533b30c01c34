"""A full disk, recognised wherever it surfaces: a write's ENOSPC/EDQUOT or SQLite's SQLITE_FULL.

Fills, uploads and the catalogue all hit the same filesystem; each caller (the fills, the NDJSON
streams, the server's error middleware) asks this one question so that a full disk is reported
as the operator's problem to fix (507, with a message saying what to do), never as a 500.
"""

from __future__ import annotations

import errno
import sqlite3

DISK_FULL_MESSAGE = "not enough disk space on the server: free some, or prune or delete models"


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT from a write, or SQLite's SQLITE_FULL (as SQLAlchemy wraps it), anywhere in
    the chain of causes: a full disk is the operator's problem to fix, not an internal error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.Error) and getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False
