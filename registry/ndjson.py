"""Streaming NDJSON replies the way ollama's streamResponse writes them.

A handler produces progress dicts; with `stream: true` each becomes one line as it happens, with
`stream: false` only the last one is sent as plain JSON. An error raised before the first line
keeps its HTTP status; one raised mid-stream becomes an `{"error": …}` line, as in ollama.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from registry.errors import ApiError

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
    except ApiError as err:
        if response is None:
            raise
        await response.write(dumps({"error": err.message}))
    if response is None:
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
    await response.write_eof()
    return response
