"""HTTP face of the runner: ollama's /api/generate, /api/chat, /api/embed, /api/embeddings, /api/ps.

Thin by design: handlers decode JSON, hand it to RunnerService, and write what comes back —
NDJSON (`application/x-ndjson`) while streaming, one JSON document for `"stream": false` and for
load/unload/debug answers, `{"error": ...}` with ollama's status before streaming starts and an
`{"error": ...}` line once it has. A client that disconnects cancels its generation: aiohttp does
not cancel handlers by default, so each handler watches its transport.

`Runner` is the entry point the server factory uses; its public handlers are mounted by the
server's route table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from runner.errors import RequestError
from runner.jsonbody import BodyError, decode_json
from runner.requests import bool_field
from runner.scheduler import RunnerConfig, Scheduler
from runner.service import RunnerService, RunnerStats, collect_chat, collect_generate, is_single_response
from runner.spec import SpecResolver

log = logging.getLogger(__name__)

_DISCONNECT_POLL = 0.1  # seconds between transport checks while a request runs


class Runner:
    """Loaded models plus the handlers serving them; one per server."""

    def __init__(self, config: RunnerConfig, resolve: SpecResolver) -> None:
        self.scheduler = Scheduler(config)
        self.service = RunnerService(config, resolve, self.scheduler)
        self.stats: RunnerStats = self.service.stats

    def loaded_paths(self) -> set[Path]:
        """Blob files of the models loaded now (weights, adapters, projector): never prune these."""
        paths: set[Path] = set()
        for model in self.scheduler.loaded():
            spec = model.spec
            paths.update((spec.model_path, *spec.adapters))
            if spec.projector is not None:
                paths.add(spec.projector)
        return paths

    def loaded_names(self) -> set[str]:
        return {model.spec.name for model in self.scheduler.loaded()}

    async def unload(self, name: str) -> bool:
        """Unload a model by name once its running requests finish; False when it was not loaded."""
        return await self.scheduler.unload_name(name)

    async def close(self) -> None:
        self.service.stop_renders()
        await self.scheduler.close()

    # ----------------------------------------------------------------- handlers

    async def generate(self, request: web.Request) -> web.StreamResponse:
        produce = lambda: self._stream(request, self.service.generate, collect_generate)  # noqa: E731
        return await cancel_on_disconnect(request, produce)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: self._stream(request, self.service.chat, collect_chat))

    async def embed(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: _answer(request, self.service.embed))

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: _answer(request, self.service.embeddings))

    async def ps(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(self.service.ps())

    async def _stream(
        self,
        request: web.Request,
        produce: Callable[[Any], AsyncIterator[dict[str, Any]]],
        collect: Callable[[list[dict[str, Any]]], dict[str, Any]],
    ) -> web.StreamResponse:
        try:
            body = await _body(request)
            stream = bool_field(body, "stream") if isinstance(body, dict) else None
        except RequestError as exc:
            return _error(exc)
        async with contextlib.aclosing(_guarded(produce(body))) as chunks:
            try:
                first = await anext(chunks)
            except RequestError as exc:
                return _error(exc)
            if is_single_response(first):
                return _json(first)
            if stream is False:
                collected = [first]
                try:
                    collected.extend([chunk async for chunk in chunks])
                except RequestError as exc:
                    return _error(exc)
                return _json(collect(collected))
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            # a client that leaves makes writes fail; leaving the block closes the generation
            with contextlib.suppress(ConnectionResetError):
                await response.write(_line(first))
                try:
                    async for chunk in chunks:
                        await response.write(_line(chunk))
                except RequestError as exc:
                    await response.write(_line({"error": exc.message}))
                await response.write_eof()
            return response


async def _body(request: web.Request) -> Any:
    try:
        return decode_json(await request.read())
    except BodyError as exc:
        raise RequestError(400, exc.message) from None


async def _answer(request: web.Request, handle: Callable[[Any], Awaitable[dict[str, Any]]]) -> web.StreamResponse:
    try:
        return _json(await handle(await _body(request)))
    except RequestError as exc:
        return _error(exc)
    except Exception as exc:
        return _error(_unexpected(exc))


async def _guarded(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Pass chunks through, turning an unexpected failure into a RequestError(500) like the rest."""
    async with contextlib.aclosing(chunks):
        try:
            async for chunk in chunks:
                yield chunk
        except RequestError:
            raise
        except Exception as exc:
            raise _unexpected(exc) from exc


def _unexpected(exc: Exception) -> RequestError:
    log.exception("request failed")
    return RequestError(500, str(exc) or type(exc).__name__)


async def cancel_on_disconnect(
    request: web.Request, handle: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Run a handler, cancelling it if the client goes away (which frees its sequence slot)."""
    work = asyncio.ensure_future(handle())
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})  # let it close its generation before we go
    if work.cancelled():
        return web.Response(status=499, text="request canceled")
    return work.result()


async def _disconnected(request: web.Request) -> None:
    """Return once the client's connection is gone; aiohttp offers no event for it, hence polling."""
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(_DISCONNECT_POLL)


def _line(chunk: dict[str, Any]) -> bytes:
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _json(payload: dict[str, Any]) -> web.Response:
    return web.Response(
        body=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(),
        content_type="application/json",
        charset="utf-8",
    )


def _error(exc: RequestError) -> web.Response:
    response = _json({"error": exc.message})
    response.set_status(exc.status)
    return response
