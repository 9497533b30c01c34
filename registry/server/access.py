"""One access line per request, and the request counts /metrics reports by method and status.

The line is written once the response went out, by aiohttp's access-logger hook, because only
then are the bytes sent known (a file response is sent after its handler returns, with the
range it asked for). A request whose handler never produced a response — cancelled at
shutdown, or its client gone mid-handler — never reaches that hook, so the middleware writes its
line (status 499, nginx's "client closed request") and marks the request as logged.

Fields, as keys of the record (`CORRAL_LOG_FORMAT=json` prints them as JSON keys): `client`
(the peer address), `method`, `path` (percent-encoded, without the query string: a presigned
blob URL's signature is a credential for an hour), `status`, `bytes` (sent, headers included,
as aiohttp's and nginx's access logs count them; a blob body sent with sendfile is added from
`SENDFILE_BYTES`, since aiohttp's count does not see it) and `duration_ms`. The counts live in
this object, one per application, so that several servers in one process count apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from registry.mirror.responses import SENDFILE_BYTES

access_log = logging.getLogger("corral.access")

CLIENT_CLOSED = 499
_LOGGED: web.RequestKey[bool] = web.RequestKey("corral access logged", bool)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def log_request(request: web.BaseRequest, status: int, nbytes: int, seconds: float) -> None:
    fields = {"client": request.remote or "-", "method": request.method, "path": request.rel_url.raw_path,
              "status": status, "bytes": nbytes, "duration_ms": round(seconds * 1000, 1)}
    access_log.info("%(client)s %(method)s %(path)s %(status)d %(bytes)dB %(duration_ms).1fms", fields,
                    extra=fields)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's hook, called after each response was sent (see the module docstring)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not request.get(_LOGGED):
            log_request(request, response.status, response.body_length + request.get(SENDFILE_BYTES, 0), time)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class RequestCounts:
    """Requests answered, by method (unknown ones as OTHER, so a client cannot mint labels) and status."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        method = request.method if request.method in _METHODS else "OTHER"
        start = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.counts[method, exc.status] += 1
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            self.counts[method, CLIENT_CLOSED] += 1
            log_request(request, CLIENT_CLOSED, 0, time.perf_counter() - start)
            request[_LOGGED] = True
            raise
        self.counts[method, response.status] += 1
        return response
