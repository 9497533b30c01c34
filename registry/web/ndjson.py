"""Streaming NDJSON replies the way ollama's streamResponse writes them.

A handler produces progress dicts; with `stream: true` each becomes one line as it happens, with
`stream: false` only the last one is sent as plain JSON. An error raised before the first line
keeps its HTTP status; one raised mid-stream becomes an `{"error": …}` line, as in ollama.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from registry.storage.disk import DISK_FULL_MESSAGE, is_disk_full
from registry.web.errors import ApiError

log = logging.getLogger("corral")

NDJSON = "application/x-ndjson"

Progress = Callable[[dict[str, Any]], Awaitable[None]]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


async def stream_progress(
    request: web.Request, stream: bool, events: AsyncIterator[dict[str, Any]]
) -> web.StreamResponse:
    if not stream:
        last: dict[str, Any] = {}
        async for event in events:
            last = event
        return web.json_response(last)
    response: web.StreamResponse | None = None
    try:
        async for event in events:
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": NDJSON})
                await response.prepare(request)
            await response.write(dumps(event))
    except Exception as exc:
        if response is None:
            raise  # the middleware answers with the right status
        await response.write(dumps({"error": _mid_stream_message(exc)}))
    if response is None:
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
    await response.write_eof()
    return response


def _mid_stream_message(exc: Exception) -> str:
    """What the error line says once the status line is gone: the middleware's words, not a cut."""
    if isinstance(exc, ApiError):
        return exc.message
    if is_disk_full(exc):
        log.error("disk full while streaming a reply: %s", exc)
        return DISK_FULL_MESSAGE
    log.exception("failed in the middle of a streamed reply")
    return "internal server error"
