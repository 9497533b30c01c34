"""`POST /v1/messages`: the Anthropic Messages API on top of the runner's chat.

Like ollama's AnthropicMessagesMiddleware in front of its ChatHandler: the request becomes a
chat request (runner.http.anthropic_wire), runs through the same service as /api/chat, and the
chunks come back as one message, or as the Messages stream's named events (`event:
message_start` … `event: message_stop`). Every failure under /v1/messages, wrong paths and
methods included, is an Anthropic error object with its status, never OpenAI's shape that the
rest of /v1 answers in; one after the stream started is an `error` event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from runner.http.anthropic_wire import (
    MessagesStream,
    decode_body,
    error_body,
    messages_plan,
    new_message_id,
    to_message,
)
from runner.http.ollama import cancel_on_disconnect
from runner.http.streaming import (
    answer_chat,
    answer_in_dialect,
    json_response,
)
from runner.service import RunnerService

PATH = "/v1/messages"


def _error(status: int, message: str) -> web.Response:
    return json_response(error_body(status, message), status)


@web.middleware
async def anthropic_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """Anthropic error objects for everything that fails under /v1/messages."""
    if request.path != PATH and not request.path.startswith(PATH + "/"):
        return await handler(request)
    return await answer_in_dialect(request, handler, _error)


class AnthropicRoutes:
    """The Messages endpoint for one RunnerService; the server mounts `messages` and `middleware`."""

    middleware = staticmethod(anthropic_errors)

    def __init__(self, service: RunnerService) -> None:
        self.service = service

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: self._answer(request))

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        plan = messages_plan(decode_body(await request.read()))
        message_id = new_message_id()
        chunks = self.service.chat(plan.request, force_tools=plan.force_tools, relax_think=True, report_stop=True)
        return await answer_chat(request, chunks, plan.stream, lambda result: to_message(plan, message_id, result),
                                 lambda: MessagesStream(plan, message_id))
