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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

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
from runner.http.streaming import (
    answer_in_dialect,
    data_event,
    first_chunk,
    json_response,
    remaining_chunks,
    write_events,
)
from runner.service import RunnerService, collect_chat, collect_generate

ModelLister = Callable[[], Awaitable[list[dict[str, Any]]]]
"""All local models as {"id", "created" (unix seconds), "owned_by" (the name's namespace)}."""
ModelFinder = Callable[[str], Awaitable[dict[str, Any] | None]]
"""One model by the name a client typed, same shape with "id" as typed; None when unknown."""

_DONE = b"data: [DONE]\n\n"


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return json_response(error_body(status, message, param), status)


@web.middleware
async def openai_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
    """OpenAI error objects for everything that fails under /v1/, never a bare 404/405/500 page."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except OpenAIError as exc:  # carries its own `param`
            return json_response(exc.body(), exc.status)

    return await answer_in_dialect(request, answer, _error)


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
            first = await first_chunk(chunks)
            if "_debug_info" in first:
                return json_response(chat_completion(completion_id, first))
            if not plan.stream:
                result = collect_chat([first, *await remaining_chunks(chunks)])
                return json_response(chat_completion(completion_id, result))
            stream = ChatStream(completion_id, plan.request["model"], plan.include_usage)
            return await _sse(request, first, chunks, stream.feed)

    # ----------------------------------------------------------------- completions

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: self._completion_answer(request))

    async def _completion_answer(self, request: web.Request) -> web.StreamResponse:
        plan = completion_plan(decode_body(await request.read(), "CompletionRequest"))
        completion_id = new_id("cmpl")
        async with contextlib.aclosing(self.service.generate(plan.request)) as chunks:
            first = await first_chunk(chunks)
            if not plan.stream:
                result = collect_generate([first, *await remaining_chunks(chunks)])
                return json_response(text_completion(completion_id, result))
            return await _sse(
                request, first, chunks, lambda chunk: completion_chunks(completion_id, chunk, plan.include_usage)
            )

    # ----------------------------------------------------------------- embeddings and models

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: self._embedding_answer(request))

    async def _embedding_answer(self, request: web.Request) -> web.StreamResponse:
        plan = embedding_plan(decode_body(await request.read(), "EmbedRequest"))
        result = await self.service.embed(plan.request)
        return json_response(embedding_list(plan.request["model"], result, plan.base64))

    async def models(self, _request: web.Request) -> web.StreamResponse:
        models = await self._list_models()
        return json_response({"object": "list", "data": [model_object(entry) for entry in models]})

    async def model(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        entry = await self._find_model(name)
        if entry is None:
            raise OpenAIError(404, f"model '{name}' not found")  # ollama never sets `param`
        return json_response(model_object(entry))


async def _sse(
    request: web.Request,
    first: dict[str, Any],
    chunks: AsyncIterator[dict[str, Any]],
    convert: Callable[[dict[str, Any]], list[dict[str, Any]]],
) -> web.StreamResponse:
    """OpenAI's unnamed events, ended by `data: [DONE]`; a runner error mid-stream becomes an
    error event, which the SDKs raise as an APIError."""
    return await write_events(
        request,
        first,
        chunks,
        lambda chunk: [data_event(event) for event in convert(chunk)],
        lambda exc: [data_event(error_body(exc.status, exc.message))],
        end=_DONE,
    )
