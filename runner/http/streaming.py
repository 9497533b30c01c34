"""What the translating APIs (OpenAI chat and completions, Responses, Anthropic Messages) share
when they answer from the runner's chat and generate chunks: compact JSON bodies, the first chunk
awaited before any status is sent, and Server-Sent Events written until the chunks run out.

Each API decides the events themselves; this module only frames and writes them. Errors found
before the first chunk are still answered with a status (the caller's error middleware renders
them); an error after the stream started can only become one more event, in the API's own shape.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aiohttp import web

from runner.errors import RequestError
from runner.service import collect_chat

log = logging.getLogger(__name__)

Chunk = dict[str, Any]


ErrorRenderer = Callable[[int, str], web.Response]
"""An API's error object for a status and message."""


async def answer_in_dialect(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                            error: ErrorRenderer) -> web.StreamResponse:
    """Run `handler` so that every failure, wrong paths and methods and unexpected exceptions
    included, reaches the client as `error(status, message)`: an SDK can only parse its own API's
    error shape, never aiohttp's plain-text pages."""
    try:
        return await handler(request)
    except RequestError as exc:
        return error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, f"{exc.reason}: {request.method} {request.path}")
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal server error")


def dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=dumps(payload), status=status, content_type="application/json", charset="utf-8")


def data_event(payload: Mapping[str, Any]) -> bytes:
    """An unnamed event (`data: {...}`), as OpenAI's chat and completions streams use."""
    return b"data: " + dumps(payload) + b"\n\n"


def named_event(name: str, payload: Mapping[str, Any]) -> bytes:
    """A named event (`event: name` then `data: {...}`), as the Responses and Anthropic streams use."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


async def first_chunk(chunks: AsyncIterator[Chunk]) -> Chunk:
    """The first runner chunk; the problems found before it (unknown model, bad options, a failed
    load) raise here, while an answer with a status can still be sent."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        raise RequestError(500, "the model produced no response") from None


async def remaining_chunks(chunks: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in chunks]


async def write_events(
    request: web.Request,
    first: Chunk,
    chunks: AsyncIterator[Chunk],
    convert: Callable[[Chunk], Iterable[bytes]],
    fail: Callable[[RequestError], Iterable[bytes]],
    end: bytes = b"",
) -> web.StreamResponse:
    """Stream the events `convert` makes of each chunk, then `end`; a failure mid-stream becomes
    the events `fail` makes of it (an unexpected exception counts as a 500) and the stream ends."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        for event in convert(first):
            await response.write(event)
        async for chunk in chunks:
            for event in convert(chunk):
                await response.write(event)
    except RequestError as exc:
        for event in fail(exc):
            await response.write(event)
    except ConnectionResetError:
        raise
    except Exception:  # the status line is gone: the client learns of it from an error event
        log.exception("stream failed on %s", request.path)
        for event in fail(RequestError(500, "internal server error")):
            await response.write(event)
    else:
        if end:
            await response.write(end)
    await response.write_eof()
    return response


class NamedEvents(Protocol):
    """An API's stream of named events for one answer (Responses, Anthropic Messages)."""

    def feed(self, chunk: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]: ...

    def fail(self, status: int, message: str) -> list[tuple[str, dict[str, Any]]]: ...


async def answer_chat(request: web.Request, chunks: AsyncIterator[Chunk], stream: bool,
                      whole: Callable[[Chunk], Mapping[str, Any]], events: Callable[[], NamedEvents],
                      ) -> web.StreamResponse:
    """One chat answer as the API's single object (`whole` of the collected chunks), or as its
    named events; the chunks are closed however the answer ends, so the runner stops at once."""
    async with contextlib.aclosing(chunks):
        first = await first_chunk(chunks)
        if not stream:
            return json_response(whole(collect_chat([first, *await remaining_chunks(chunks)])))
        named = events()
        return await write_events(
            request,
            first,
            chunks,
            lambda chunk: [named_event(*event) for event in named.feed(chunk)],
            lambda exc: [named_event(*event) for event in named.fail(exc.status, exc.message)],
        )
