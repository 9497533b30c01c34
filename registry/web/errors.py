"""Error replies in the two dialects corral speaks, and the registry's error codes declared once.

ollama's `/api/*` uses `{"error": "..."}`; the registry protocol under `/v2/` uses the Docker
distribution error list (`{"errors": [{"code", "message", "detail"}]}`). Handlers raise `ApiError`
or an `OciError` made from one of the codes below; the server's error middleware turns them (and
any unexpected exception) into the right body, so no traceback ever reaches a client.

Each `/v2` code is declared here with its usual status and message, as distribution's `errcode`
register does, so a call site names the code and says only what is particular to it. Another
registry's error list is read back into one line by `registry_reason`, for messages that quote it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web


class ApiError(Exception):
    """An ollama-style error: `status` and the exact message ollama would send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ErrorCode:
    """One registry error code: its name on the wire, its usual status and its usual message."""

    code: str
    status: int
    message: str

    def __call__(self, message: str | None = None, detail: object = None, *, status: int | None = None) -> OciError:
        """An error of this code; `message` and `status` replace the usual ones where a case needs it."""
        return OciError(self, message or self.message, detail, status or self.status)


class OciError(Exception):
    """A Docker registry v2 error, made by calling an `ErrorCode`."""

    def __init__(self, code: ErrorCode, message: str, detail: object, status: int) -> None:
        super().__init__(message)
        self.error_code = code
        self.code = code.code
        self.status = status
        self.message = message
        self.detail = detail


UNKNOWN = ErrorCode("UNKNOWN", 500, "unknown error")
UNAVAILABLE = ErrorCode("UNAVAILABLE", 503, "service unavailable")
UNAUTHORIZED = ErrorCode("UNAUTHORIZED", 401, "authentication required")
DENIED = ErrorCode("DENIED", 403, "requested access to the resource is denied")
NAME_INVALID = ErrorCode("NAME_INVALID", 400, "invalid repository name")
NAME_UNKNOWN = ErrorCode("NAME_UNKNOWN", 404, "repository name not known to registry")
PAGINATION_NUMBER_INVALID = ErrorCode("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested")
DIGEST_INVALID = ErrorCode("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
SIZE_INVALID = ErrorCode("SIZE_INVALID", 400, "provided length did not match content length")
MANIFEST_UNKNOWN = ErrorCode("MANIFEST_UNKNOWN", 404, "manifest unknown")
MANIFEST_INVALID = ErrorCode("MANIFEST_INVALID", 400, "manifest invalid")
MANIFEST_BLOB_UNKNOWN = ErrorCode("MANIFEST_BLOB_UNKNOWN", 400, "blob unknown to registry")
BLOB_UNKNOWN = ErrorCode("BLOB_UNKNOWN", 404, "blob unknown to registry")
BLOB_UPLOAD_UNKNOWN = ErrorCode("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
BLOB_UPLOAD_INVALID = ErrorCode("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")


def registry_reason(body: bytes) -> str:
    """A registry's error body as one line: the `code: message` of a distribution error list, else
    the text itself (shortened)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        errors = json.loads(text).get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, list) and errors and all(isinstance(e, dict) for e in errors):
        text = "; ".join(": ".join(str(e[k]) for k in ("code", "message") if e.get(k)) for e in errors)
    return " ".join(text.split())[:500] or "no reason given"


def api_error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def oci_error_response(err: OciError) -> web.Response:
    entry: dict[str, object] = {"code": err.code, "message": err.message}
    if err.detail is not None:
        entry["detail"] = err.detail
    return web.json_response({"errors": [entry]}, status=err.status)
