"""Every failure answered in the dialect of its route (the access log is `server.access`).

Handlers raise `ApiError`/`OciError` (or let anything else escape); this turns them into ollama's
`{"error": …}` on `/api/*` and the registry's error list on `/v2/*`, maps a full disk to 507, and
never lets a traceback reach a client.
"""

from __future__ import annotations

import logging

from aiohttp import web

from registry.storage.disk import DISK_FULL_MESSAGE, is_disk_full
from registry.web.errors import UNAVAILABLE, UNKNOWN, ApiError, OciError, api_error_response, oci_error_response

log = logging.getLogger("corral")


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Map handler exceptions to the dialect of the route; never leak a traceback."""
    try:
        return await handler(request)
    except ApiError as err:
        if request.path.startswith("/v2/"):
            return oci_error_response(UNKNOWN(err.message, status=err.status))
        return api_error_response(err.status, err.message)
    except OciError as err:
        return oci_error_response(err)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            return api_error_response(exc.status, exc.reason)
        raise
    except ConnectionResetError:
        raise  # the client left: there is no one to answer (server.access logs it as 499)
    except Exception as exc:
        if is_disk_full(exc):
            log.error("disk full on %s %s: %s", request.method, request.path, exc)
            if request.path.startswith("/v2/"):
                return oci_error_response(UNAVAILABLE(DISK_FULL_MESSAGE, status=507))
            return api_error_response(507, DISK_FULL_MESSAGE)
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/v2/"):
            return oci_error_response(UNKNOWN("internal server error"))
        return api_error_response(500, "internal server error")
