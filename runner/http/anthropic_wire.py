"""The Anthropic Messages API (`POST /v1/messages`) translated to and from the runner's chat.

The translation follows ollama's anthropic/anthropic.go and its AnthropicMessagesMiddleware:
`system` as a string or text blocks (joined), messages of text, image (base64), tool_use,
tool_result and thinking blocks (a user turn's tool results become tool messages ahead of its
text), `max_tokens` required and positive, `stop_sequences`, temperature/top_p/top_k only when
given (else the model's own), `thinking` enabled/disabled or `output_config.effort` as `think`,
and a request asking a model that cannot think to think is served without thinking rather than
refused. Answers carry the message id `msg_<24 hex>`, the model name as asked, usage from the
prompt and eval counts, and stop reasons end_turn, max_tokens and tool_use. The stream is
ollama's event sequence: message_start (input tokens estimated from the text, as ollama does,
until message_delta gives the count), content blocks started, delta'd and stopped one at a
time, message_delta, message_stop. Errors are `{"type": "error", "error": {type, message},
"request_id"}` with the type following the status.

Beyond ollama: `stop_sequence` is reported (the runner says which stop string ended the answer;
ollama's chat cannot, so it says end_turn), `tool_choice` is honoured (`any` or a named `tool`
is enforced by a grammar, `none` hides the tools), a `ping` follows message_start as on
Anthropic's API, thinking blocks carry an empty `signature` (the SDK's type requires one), an
error after the stream started is an `error` event (the SDKs raise it), and the built-in web
search tool is refused (corral has no cloud: ollama's own message when its cloud is disabled).

Everything here is pure: no I/O, no model. Problems raise RequestError, which the route's error
middleware renders in Anthropic's shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.errors import RequestError
from runner.jsonbody import BodyError, decode_json, json_type
from runner.requests import name_tool_results, typed_field

REQUEST = "MessagesRequest"
CLOUD_DISABLED = "ollama cloud is disabled: web search is unavailable"
_EFFORTS = {"high": "high", "xhigh": "high", "medium": "medium", "low": "low", "max": "max"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """anthropic.NewError: the error type follows the status; every error has a request id."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": f"req_{secrets.token_hex(12)}"}


def new_message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def decode_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body (400 for an empty, malformed or non-object body)."""
    try:
        body = decode_json(raw)
    except BodyError as exc:
        raise RequestError(400, exc.message) from None
    if not isinstance(body, dict):
        raise RequestError(400, f"json: cannot unmarshal {json_type(body)} into Go value of type "
                                "anthropic.MessagesRequest")
    return body


# ----------------------------------------------------------------- requests


@dataclass(frozen=True)
class MessagesPlan:
    """A Messages request as the runner takes it, plus how to answer."""

    request: dict[str, Any]  # an ollama ChatRequest
    stream: bool
    force_tools: list[str] | None  # a call to one of these is required (tool_choice any/tool)
    stop_sequences: tuple[str, ...]
    estimated_input_tokens: int  # message_start's count, before the runner has one


def _image(source: Any) -> str:
    """resolveImageSource: a base64 image's data (remote images are not fetched)."""
    if not isinstance(source, dict):
        raise RequestError(400, "invalid image source")
    if source.get("type") != "base64":
        raise RequestError(400, f"invalid image source type: {source.get('type') or ''}. Only base64 images are "
                                "supported.")
    data = source.get("data") if isinstance(source.get("data"), str) else ""
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f"invalid base64 image data: {exc}") from None
    return data


def _tool_result(block: Mapping[str, Any]) -> dict[str, Any]:
    """A tool_result block as a tool message: its text (a string or text blocks) and images."""
    content = block.get("content")
    text, images = (content, []) if isinstance(content, str) else ("", [])
    for part in content if isinstance(content, list) else []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text += part["text"]
        elif kind == "image":
            images.append(_image(part.get("source")))
    message: dict[str, Any] = {"role": "tool", "content": text, "tool_call_id": block.get("tool_use_id") or ""}
    if images:
        message["images"] = images
    return message


def _blocks(value: Any, index: int) -> list[dict[str, Any]]:
    """A message's content as blocks (a plain string is one text block)."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if isinstance(value, list) and all(isinstance(block, dict) for block in value):
        return value
    raise RequestError(400, f"messages[{index}].content: json: cannot unmarshal {json_type(value)} into Go struct "
                            "field MessageParam.content of type []anthropic.ContentBlock")


def _message(item: Any, index: int) -> list[dict[str, Any]]:
    """convertMessage: one Anthropic message as ollama messages (tool results are their own)."""
    if not isinstance(item, dict):
        raise RequestError(400, f"json: cannot unmarshal {json_type(item)} into Go struct field "
                                f"{REQUEST}.messages of type anthropic.MessageParam")
    role = (typed_field(item, "role", "string", "MessageParam") or "").lower()
    text, images, calls, thinking, results = "", [], [], "", []
    for block in _blocks(item.get("content"), index):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text += block["text"]
        elif kind == "image":
            images.append(_image(block.get("source")))
        elif kind == "tool_use":
            if not block.get("id"):
                raise RequestError(400, "tool_use block missing required 'id' field")
            if not block.get("name"):
                raise RequestError(400, "tool_use block missing required 'name' field")
            arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
            calls.append({"id": block["id"], "function": {"name": block["name"], "arguments": arguments}})
        elif kind == "tool_result":
            results.append(_tool_result(block))
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking = block["thinking"]
    messages = results if role == "user" else []
    if text or images or calls or thinking:
        message: dict[str, Any] = {"role": role, "content": text}
        if images:
            message["images"] = images
        if calls:
            message["tool_calls"] = calls
        if thinking:
            message["thinking"] = thinking
        messages.append(message)
    return messages if role == "user" else messages + results


def _system(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(b["text"] for b in value if isinstance(b, dict) and b.get("type") == "text"
                       and isinstance(b.get("text"), str))
    return ""


def _tool(tool: Any) -> dict[str, Any]:
    """convertTool: a client tool as a runner function tool; the built-in web search is refused."""
    if not isinstance(tool, dict):
        raise RequestError(400, f"json: cannot unmarshal {json_type(tool)} into Go struct field {REQUEST}.tools "
                                "of type anthropic.Tool")
    if str(tool.get("type") or "").startswith("web_search"):
        raise RequestError(403, CLOUD_DISABLED)
    name = typed_field(tool, "name", "string", "Tool") or ""
    schema = tool.get("input_schema")
    if schema is not None and not isinstance(schema, dict):
        raise RequestError(400, f"invalid input_schema for tool {json.dumps(name)}: json: cannot unmarshal "
                                f"{json_type(schema)} into Go value of type api.ToolFunctionParameters")
    function: dict[str, Any] = {"name": name, "description": typed_field(tool, "description", "string", "Tool") or ""}
    if schema is not None:
        function["parameters"] = schema
    return {"type": "function", "function": function}


def _tool_choice(value: Any, names: list[str]) -> tuple[list[str] | None, bool]:
    """(names one of which must be called or None, whether the tools stay available)."""
    kind = value.get("type") if value is not None else "auto"
    if kind == "auto":
        return None, True
    if kind == "none":
        return None, False
    if kind == "any":
        if not names:
            raise RequestError(400, "tool_choice: 'any' requires tools")
        return names, True
    if kind == "tool":
        if value.get("name") not in names:
            raise RequestError(400, f"tool_choice: no tool named {value.get('name')!r} in tools")
        return [value["name"]], True
    raise RequestError(400, f"tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got {kind!r}")


def _think(body: Mapping[str, Any]) -> bool | str | None:
    thinking = typed_field(body, "thinking", "object", REQUEST) or {}
    if thinking.get("type") == "enabled":
        return True
    if thinking.get("type") == "disabled":
        return False
    output_config = typed_field(body, "output_config", "object", REQUEST) or {}
    effort = output_config.get("effort")
    return _EFFORTS.get(effort.strip().lower()) if isinstance(effort, str) else None


def _estimate_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
    """About four characters a token, the text of the conversation and the tool declarations."""
    characters = sum(len(m["role"]) + len(m["content"]) + len(m.get("thinking", "")) for m in messages)
    characters += sum(len(json.dumps(m["tool_calls"])) for m in messages if m.get("tool_calls"))
    characters += sum(len(json.dumps(tool)) for tool in tools)
    return max(1, characters // 4)


def messages_plan(body: Mapping[str, Any]) -> MessagesPlan:
    """FromMessagesRequest, after the middleware's checks: model, max_tokens and messages."""
    model = typed_field(body, "model", "string", REQUEST) or ""
    max_tokens = typed_field(body, "max_tokens", "int", REQUEST)
    raw_messages = typed_field(body, "messages", "array", REQUEST) or []
    stream = bool(typed_field(body, "stream", "bool", REQUEST))
    raw_stops = typed_field(body, "stop_sequences", "array", REQUEST) or []
    for stop in raw_stops:
        if not isinstance(stop, str):
            raise RequestError(400, f"json: cannot unmarshal {json_type(stop)} into Go struct field "
                                    f"{REQUEST}.stop_sequences of type string")
    raw_tools = typed_field(body, "tools", "array", REQUEST) or []
    tool_choice = typed_field(body, "tool_choice", "object", REQUEST)
    if not model:
        raise RequestError(400, "model is required")
    if not max_tokens or max_tokens <= 0:
        raise RequestError(400, "max_tokens is required and must be positive")
    if not raw_messages:
        raise RequestError(400, "messages is required")

    system = _system(body.get("system"))
    messages = [{"role": "system", "content": system}] if system else []
    for index, item in enumerate(raw_messages):
        messages += _message(item, index)
    name_tool_results(messages)
    options: dict[str, Any] = {"num_predict": max_tokens}
    for key, kind in (("temperature", "float64"), ("top_p", "float64"), ("top_k", "int")):
        value = typed_field(body, key, kind, REQUEST)
        if value is not None:
            options[key] = value
    if raw_stops:
        options["stop"] = list(raw_stops)
    tools = [_tool(tool) for tool in raw_tools]
    force_tools, keep_tools = _tool_choice(tool_choice, [t["function"]["name"] for t in tools])
    request: dict[str, Any] = {"model": model, "messages": messages, "options": options, "stream": stream}
    if tools and keep_tools:
        request["tools"] = tools
    if (think := _think(body)) is not None:
        request["think"] = think
    return MessagesPlan(request, stream, force_tools, tuple(raw_stops), _estimate_tokens(messages, tools))


# ----------------------------------------------------------------- responses


def _stop(plan: MessagesPlan, final: Mapping[str, Any], called: bool) -> tuple[str, str | None]:
    """mapStopReason, with stop_sequence when one of the request's stop strings ended the answer."""
    if called:
        return "tool_use", None
    if final.get("done_reason") == "length":
        return "max_tokens", None
    if final.get("stop_sequence") in plan.stop_sequences:
        return "stop_sequence", final["stop_sequence"]
    return "end_turn", None


def _usage(final: Mapping[str, Any]) -> dict[str, int]:
    return {"input_tokens": final.get("prompt_eval_count", 0), "output_tokens": final.get("eval_count", 0)}


def _tool_use(call: Mapping[str, Any], with_input: bool = True) -> dict[str, Any]:
    function = call["function"]
    return {"type": "tool_use", "id": call.get("id", ""), "name": function["name"],
            "input": function["arguments"] if with_input else {}}


def to_message(plan: MessagesPlan, message_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """ToMessagesResponse: the non-streamed answer from the runner's collected chat response."""
    message = result.get("message", {})
    calls = message.get("tool_calls") or []
    content: list[dict[str, Any]] = []
    if message.get("thinking"):
        content.append({"type": "thinking", "thinking": message["thinking"], "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    content += [_tool_use(call) for call in calls]
    stop_reason, stop_sequence = _stop(plan, result, bool(calls))
    return {"id": message_id, "type": "message", "role": "assistant", "model": plan.request["model"],
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": _usage(result)}


Event = tuple[str, dict[str, Any]]


class MessagesStream:
    """StreamConverter: runner chunks in, the Messages stream's events out.

    One content block is open at a time; thinking, text and each tool call close the block
    before them, so blocks are numbered in the order they appear, as in the final message.
    """

    def __init__(self, plan: MessagesPlan, message_id: str) -> None:
        self.plan = plan
        self.message_id = message_id
        self._started = False
        self._index = 0  # the next block's index
        self._open: str | None = None  # the type of the open block
        self._called = False

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.plan.request["model"],
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.plan.estimated_input_tokens, "output_tokens": 0}}
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        self._index += 1
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index - 1})]

    def _block(self, block: dict[str, Any]) -> list[Event]:
        events = self._close()
        self._open = block["type"]
        return [*events, ("content_block_start", {"type": "content_block_start", "index": self._index,
                                                  "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        """The events for one runner chunk; the last chunk ends the message."""
        message = chunk.get("message", {})
        events = self._start()
        if message.get("thinking"):
            if self._open != "thinking":
                events += self._block({"type": "thinking", "thinking": "", "signature": ""})
            events.append(self._delta({"type": "thinking_delta", "thinking": message["thinking"]}))
        if message.get("content"):
            if self._open != "text":
                events += self._block({"type": "text", "text": ""})
            events.append(self._delta({"type": "text_delta", "text": message["content"]}))
        for call in message.get("tool_calls") or []:
            self._called = True
            events += self._block(_tool_use(call, with_input=False))
            partial = json.dumps(call["function"]["arguments"], ensure_ascii=False, separators=(",", ":"))
            events.append(self._delta({"type": "input_json_delta", "partial_json": partial}))
            events += self._close()
        if chunk.get("done"):
            events += self._close()
            stop_reason, stop_sequence = _stop(self.plan, chunk, self._called)
            events.append(("message_delta", {"type": "message_delta",
                                             "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                             "usage": _usage(chunk)}))
            events.append(("message_stop", {"type": "message_stop"}))
        return events

    def fail(self, status: int, message: str) -> list[Event]:
        """A failure mid-stream: an `error` event, which the SDKs raise."""
        body = error_body(status, message)
        return [*self._start(), ("error", {"type": "error", "error": body["error"]})]
