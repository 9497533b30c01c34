"""Blob responses as the cache lifecycle sees them: leased while they send, counted as hit or miss.

`TrackedFileResponse` is what `LocalContent.file_response` returns for a blob the store holds (a
hit): it holds the lease it is given from the moment it is created until the last byte went out
(aiohttp sends a returned FileResponse after the handler, so a lease scoped to the handler would
end too early), then reports the bytes sent. `BlobMeter` wraps the `/v2` blob route: it counts
streamed answers from a fill (a miss) and the readers of each blob while their response runs,
which is what "waiters per fill" in /metrics reports. Both get what they report to as arguments,
so the mirror does not know who counts.

Bytes are counted for responses sent in full: ollama's downloader drops its first, Range-less
GET of each blob right after the headers, and counting that response's whole length would
double the bytes a pull appears to take. Both kinds of blob response send their bodies with
sendfile (`web.sendfile.FileSender`, for a stored blob too: aiohttp's own `loop.sendfile` costs
more per call, and uvloop has none), past aiohttp's writer (whose count is a response's
`body_length`), so each records the body bytes it sent under `SENDFILE_BYTES` on its request:
that says whether a streamed answer went out in full (whether the client is still connected
afterwards says nothing: a quick client has already read it all and closed), and the access log
adds it to the bytes sent.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.typedefs import Handler
from aiohttp.web_fileresponse import NOSENDFILE

from registry.model.names import Digest, InvalidDigestError
from registry.storage.leases import Lease
from registry.web.sendfile import FileSender

BLOB_ROUTE = "/v2/{ns}/{model}/blobs/{digest}"
_SERVED = (200, 206)

Sent = Callable[[int], None]
"""Told the number of bytes a blob response sent in full (0 when it was cut short)."""

SENDFILE_BYTES: web.RequestKey[int] = web.RequestKey("corral sendfile bytes", int)
"""Body bytes a blob response sent with sendfile (see the module docstring)."""


class TrackedFileResponse(web.FileResponse):
    def __init__(self, path: Path, lease: Lease, on_sent: Sent, **kwargs: object) -> None:
        super().__init__(path, **kwargs)  # type: ignore[arg-type]
        self._lease = lease
        self._on_sent = on_sent
        weakref.finalize(self, lease.release)  # a response never prepared must not pin the blob forever

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        completed = False
        try:
            await self._lease.publish()
            writer = await super().prepare(request)
            completed = True
            return writer
        finally:
            self._lease.release()
            if request.method == "GET" and self.status in _SERVED:
                sent = (self.content_length or 0) if completed else 0
                if not NOSENDFILE:  # aiohttp's debugging switch sends through its writer instead
                    request[SENDFILE_BYTES] = sent
                self._on_sent(sent)

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[Any], offset: int,
                        count: int) -> AbstractStreamWriter:
        """aiohttp's body sending, with `FileSender` in place of `loop.sendfile`."""
        if NOSENDFILE or self.compression:
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)  # FileResponse.prepare is what called this
        transport = request.transport
        if writer is None or transport is None:
            raise ConnectionResetError("client disconnected")
        with FileSender(transport, writer.write) as sender:
            await sender.send(fobj.fileno(), offset, count)
        await web.StreamResponse.write_eof(self)
        return writer


class BlobMeter:
    """Counts the readers of each blob while their `/v2` GET runs, and the bytes of streamed (miss) answers."""

    def __init__(self, on_miss: Sent) -> None:
        self.readers: Counter[Digest] = Counter()
        self._on_miss = on_miss

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        if request.method != "GET" or route is None or route.canonical != BLOB_ROUTE:
            return await handler(request)
        try:
            digest = Digest.parse(request.match_info["digest"])
        except InvalidDigestError:
            return await handler(request)
        readers = self.readers
        readers[digest] += 1
        try:
            response = await handler(request)
        finally:
            readers[digest] -= 1
            if readers[digest] <= 0:
                del readers[digest]
        if not isinstance(response, web.FileResponse) and response.status in _SERVED and response.prepared:
            sent = request.get(SENDFILE_BYTES, 0)
            self._on_miss(sent if sent == response.content_length else 0)
        return response
