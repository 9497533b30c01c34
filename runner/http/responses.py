"""`POST /v1/responses`: the OpenAI Responses API on top of the runner's chat.

Like ollama's ResponsesMiddleware in front of its ChatHandler: the request becomes a chat
request (runner.http.responses_wire), runs through the same service as /api/chat and
/v1/chat/completions, and the chunks come back as one response object, or as the Responses
stream's named events (`event: response.created` … `event: response.completed`). Failures before
the answer starts are OpenAI error objects with their status (the /v1 error middleware of
runner.http.openai renders them); one after it started is a `response.failed` event.
"""

from __future__ import annotations

from aiohttp import web

from runner.http.ollama import cancel_on_disconnect
from runner.http.openai_wire import decode_body
from runner.http.responses_wire import REQUEST, ResponsesStream, new_response_id, responses_plan, to_response
from runner.http.streaming import answer_chat
from runner.service import RunnerService


class ResponsesRoutes:
    """The Responses endpoint for one RunnerService."""

    def __init__(self, service: RunnerService) -> None:
        self.service = service

    async def create(self, request: web.Request) -> web.StreamResponse:
        return await cancel_on_disconnect(request, lambda: self._answer(request))

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        plan = responses_plan(decode_body(await request.read(), REQUEST))
        response_id = new_response_id()
        chunks = self.service.chat(plan.request, force_tools=plan.force_tools)
        return await answer_chat(request, chunks, plan.stream, lambda result: to_response(plan, response_id, result),
                                 lambda: ResponsesStream(plan, response_id))
