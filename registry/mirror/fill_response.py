"""Serving a blob while it is still being filled from upstream.

The response has its final status and exact Content-Length from the start (the size is known
from the manifest), then streams bytes from the partial file as the fill writes them, waiting
where they have not arrived yet. A response that covers the whole blob (a GET without Range, or
one range over all of it) holds back its last byte until the whole blob hashed to its digest: a
client that reads a blob in one piece can never receive a complete-looking copy of unverified
data. (It need not wait for the blob's fsync and its place in the catalogue: they follow.) If the
fill fails, the connection is cut, so the client sees a short body, never a wrong complete one.
Ranged readers assembling a blob from parts (ollama) verify the sha256 themselves.
Bytes go out with sendfile as soon as they are on disk (`web.sendfile.FileSender`): no copy
through Python, so many readers of a filling blob cost little CPU and no memory; how many went
out is kept on the request (`SENDFILE_BYTES`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import BinaryIO

from aiohttp import web

from registry.mirror.fills import Fill, FillError
from registry.mirror.responses import SENDFILE_BYTES
from registry.web.sendfile import FileSender


def _byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(start, stop) of the requested range, None for the whole blob; 416 when unsatisfiable."""
    try:
        rng = request.http_range
    except ValueError:
        raise _unsatisfiable(size) from None
    if rng.start is None and rng.stop is None:
        return None
    start, stop = rng.start, rng.stop
    if start is None or start < 0:  # suffix form bytes=-N
        start, stop = max(size + (start or 0), 0), size
    stop = size if stop is None else min(stop, size)
    if start >= stop:
        raise _unsatisfiable(size)
    return start, stop


def _unsatisfiable(size: int) -> web.HTTPRequestRangeNotSatisfiable:
    return web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})


async def fill_response(request: web.Request, fill: Fill, headers: Mapping[str, str]) -> web.StreamResponse:
    """Stream `fill`'s bytes for this request; returns the finished (or cut-off) response."""
    size = fill.size
    rng = _byte_range(request, size)
    start, stop = rng if rng is not None else (0, size)
    response = web.StreamResponse(status=206 if rng is not None else 200, headers={
        **headers, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
    })
    if rng is not None:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response.content_length = stop - start
    hold_last = start == 0 and stop == size
    file = await asyncio.to_thread(_open, fill)
    try:
        await response.prepare(request)
        if request.transport is None:
            raise ConnectionResetError("client disconnected")
        with FileSender(request.transport, response.write) as sender:
            await _send(request, fill, file, sender, start, stop, hold_last)
        await response.write_eof()
    except FillError:
        if request.transport is not None:
            request.transport.abort()  # a short body: the client knows it did not get the blob
    except ConnectionError:
        pass  # the client went away (ollama drops its resolve GET after the headers); the fill goes on
    finally:
        await asyncio.to_thread(file.close)
    return response


async def _send(request: web.Request, fill: Fill, file: BinaryIO, sender: FileSender, start: int, stop: int,
                hold_last: bool) -> None:
    pos = start
    while pos < stop:
        limit = stop - 1 if hold_last and not fill.matched else stop
        if pos >= limit:
            await fill.wait_matched()
            continue
        end = min(await fill.wait_for(pos), limit)
        await sender.send(file.fileno(), pos, end - pos)  # read and written under TLS
        pos = end
        request[SENDFILE_BYTES] = pos - start


def _open(fill: Fill) -> BinaryIO:
    """The partial file, or the published blob if the fill finished in between."""
    for path in (fill.path, fill.path.parent / fill.digest.filename):
        try:
            return open(path, "rb")  # closed by fill_response
        except FileNotFoundError:
            continue
    raise fill.error or FillError(f"{fill.digest}: neither the partial file nor the blob exists")
