"""OpenAI-compatible HTTP API on top of RunnerService: /v1/chat/completions, /v1/completions,
/v1/embeddings, /v1/models and /v1/models/{model}.

Like ollama's middleware/openai.go, each handler translates the OpenAI request into the
runner's ollama-shaped request (runner.openai_wire), runs it through the same service that
serves /api/chat, /api/generate and /api/embed, and translates the chunks back: Server-Sent
Events (`data: {...}\\n\\n`, ended by `data: [DONE]\\n\\n`) when streaming, one JSON object
otherwise. Every failure on a /v1 path, including unknown paths, wrong methods and unexpected
exceptions, is answered with an OpenAI error object; an error after streaming started becomes
a `data: {"error": ...}` event, which the OpenAI SDKs raise as an APIError.

The model list comes from the registry through two callables, so the runner needs no storage.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from runner.errors import RequestError
from runner.http.ollama import cancel_on_disconnect
from runner.http.openai_wire import (
    ChatStream,
    OpenAIError,
    chat_completion,
    chat_plan,
    completion_chunks,
    completion_plan,
    decode_body,
    embedding_list,
    embedding_plan,
    error_body,
    model_object,
    new_id,
    text_completion,
)
from runner.service import RunnerService, collect_chat, collect_generate

log = logging.getLogger(__name__)

ModelLister = Callable[[], Awaitable[list[dict[str, Any]]]]
"""All local models as {"id", "created" (unix seconds), "owned_by" (the name's namespace)}."""
ModelFinder = Callable[[str], Awaitable[dict[str, Any] | None]]
"""One model by the name a client typed, same shape with "id" as typed; None when unknown."""

_DONE = b"data: [DONE]\n\n"


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + _dumps(payload) + b"\n\n"


def _json(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=_dumps(payload), status=status, content_type="application/json", charset="utf-8")


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return _json(error_body(status, message, param), status)


@web.middleware
async def openai_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
    """OpenAI error objects for everything that fails under /v1/, never a bare 404/405/500 page."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    try:
        return await handler(request)
    except OpenAIError as exc:
        return _json(exc.body(), exc.status)
    except RequestError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal server error")


class OpenAIRoutes:
    """The /v1 endpoints for one RunnerService; the server mounts its handlers and `middleware`."""

    middleware = staticmethod(openai_errors)

    def __init__(self, service: RunnerService, list_models: ModelLister, find_model: ModelFinder) -> None:
        self.service = service
        self._list_models = list_models
        self._find_model = find_model

    # ----------------------------------------------------------------- chat

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: self._chat_answer(request))

    async def _chat_answer(self, request: web.Request) -> web.StreamResponse:
        plan = chat_plan(decode_body(await request.read(), "ChatCompletionRequest"))
        completion_id = new_id("chatcmpl")
        chunks = self.service.chat(plan.request, force_tools=plan.force_tools)
        async with contextlib.aclosing(chunks):
            first = await _first(chunks)
            if "_debug_info" in first:
                return _json(chat_completion(completion_id, first))
            if not plan.stream:
                return _json(chat_completion(completion_id, collect_chat([first, *await _rest(chunks)])))
            stream = ChatStream(completion_id, plan.request["model"], plan.include_usage)
            return await _sse(request, first, chunks, stream.feed)

    # ----------------------------------------------------------------- completions

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: self._completion_answer(request))

    async def _completion_answer(self, request: web.Request) -> web.StreamResponse:
        plan = completion_plan(decode_body(await request.read(), "CompletionRequest"))
        completion_id = new_id("cmpl")
        async with contextlib.aclosing(self.service.generate(plan.request)) as chunks:
            first = await _first(chunks)
            if not plan.stream:
                return _json(text_completion(completion_id, collect_generate([first, *await _rest(chunks)])))
            return await _sse(
                request, first, chunks, lambda chunk: completion_chunks(completion_id, chunk, plan.include_usage)
            )

    # ----------------------------------------------------------------- embeddings and models

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: self._embedding_answer(request))

    async def _embedding_answer(self, request: web.Request) -> web.StreamResponse:
        plan = embedding_plan(decode_body(await request.read(), "EmbedRequest"))
        result = await self.service.embed(plan.request)
        return _json(embedding_list(plan.request["model"], result, plan.base64))

    async def models(self, _request: web.Request) -> web.StreamResponse:
        models = await self._list_models()
        return _json({"object": "list", "data": [model_object(entry) for entry in models]})

    async def model(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        entry = await self._find_model(name)
        if entry is None:
            raise OpenAIError(404, f"model '{name}' not found")  # ollama never sets `param`
        return _json(model_object(entry))


async def _first(chunks: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The first runner chunk; errors before it are still answerable with a status."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        raise OpenAIError(500, "the model produced no response") from None


async def _rest(chunks: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk async for chunk in chunks]


async def _sse(
    request: web.Request,
    first: dict[str, Any],
    chunks: AsyncIterator[dict[str, Any]],
    convert: Callable[[dict[str, Any]], list[dict[str, Any]]],
) -> web.StreamResponse:
    """Write converted chunks as Server-Sent Events; a runner error mid-stream becomes an error event."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        for event in convert(first):
            await response.write(_event(event))
        async for chunk in chunks:
            for event in convert(chunk):
                await response.write(_event(event))
    except RequestError as exc:
        await response.write(_event(error_body(exc.status, exc.message)))
    except ConnectionResetError:
        raise
    except Exception:  # the status line is gone; the SDKs raise an error event as an APIError
        log.exception("stream failed on %s", request.path)
        await response.write(_event(error_body(500, "internal server error")))
    else:
        await response.write(_DONE)
    await response.write_eof()
    return response
