"""Blob responses as the cache lifecycle sees them: leased while they send, counted as hit or miss.

`TrackedFileResponse` is what `content.file_response` returns for a blob the store holds (a
hit): it holds a lease on the digest from the moment it is created until the last byte went out
(aiohttp sends a returned FileResponse after the handler, so a lease scoped to the handler would
end too early). `blob_meter` wraps the `/v2` blob route: it counts streamed answers from a fill
(a miss) and the readers of each blob while their response runs, which is what "waiters per
fill" in /metrics reports.

Bytes are counted for responses sent in full: ollama's downloader drops its first, Range-less
GET of each blob right after the headers, and counting that response's whole length would
double the bytes a pull appears to take.
"""

from __future__ import annotations

import weakref
from collections import Counter
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.typedefs import Handler

from registry.server.metrics import HIT, METRICS, MISS
from registry.model.names import Digest, InvalidDigestError
from registry.server.services import SERVICES

BLOB_ROUTE = "/v2/{ns}/{model}/blobs/{digest}"
READERS: web.AppKey[Counter[Digest]] = web.AppKey("blob_readers", Counter)
_SERVED = (200, 206)


class TrackedFileResponse(web.FileResponse):
    def __init__(self, path: Path, request: web.Request, **kwargs: object) -> None:
        super().__init__(path, **kwargs)  # type: ignore[arg-type]
        self._lease = request.app[SERVICES].leases.acquire(Digest.parse(Path(path).name))
        weakref.finalize(self, self._lease.release)  # a response never prepared must not pin the blob forever

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        metrics = request.app.get(METRICS)
        completed = False
        try:
            writer = await super().prepare(request)
            completed = True
            return writer
        finally:
            self._lease.release()
            if metrics is not None and request.method == "GET" and self.status in _SERVED:
                metrics.served(HIT, self.content_length if completed else 0)


@web.middleware
async def blob_meter(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    if request.method != "GET" or route is None or route.canonical != BLOB_ROUTE:
        return await handler(request)
    try:
        digest = Digest.parse(request.match_info["digest"])
    except InvalidDigestError:
        return await handler(request)
    readers = request.app[READERS]
    readers[digest] += 1
    try:
        response = await handler(request)
    finally:
        readers[digest] -= 1
        if readers[digest] <= 0:
            del readers[digest]
    if not isinstance(response, web.FileResponse) and response.status in _SERVED and response.prepared:
        transport = request.transport
        completed = transport is not None and not transport.is_closing()  # a cut-off fill aborts the connection
        request.app[METRICS].served(MISS, (response.content_length or 0) if completed else 0)
    return response
