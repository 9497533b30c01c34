"""Error replies in the three dialects corral speaks.

ollama's `/api/*` uses `{"error": "..."}`; the registry protocol under `/v2/` uses the Docker
distribution error list. Handlers raise `ApiError`/`OciError`; the middleware in server.py turns
them (and any unexpected exception) into the right body, so no traceback ever reaches a client.
"""

from __future__ import annotations

import errno
import sqlite3

from aiohttp import web


class ApiError(Exception):
    """An ollama-style error: `status` and the exact message ollama would send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class OciError(Exception):
    """A Docker registry v2 error (`code` is e.g. MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_INVALID)."""

    def __init__(self, status: int, code: str, message: str, detail: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


def api_error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def oci_error_response(err: OciError) -> web.Response:
    entry: dict[str, object] = {"code": err.code, "message": err.message}
    if err.detail is not None:
        entry["detail"] = err.detail
    return web.json_response({"errors": [entry]}, status=err.status)


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
