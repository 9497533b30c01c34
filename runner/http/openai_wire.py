"""OpenAI request and response shapes, translated to and from the runner's ollama-shaped dicts.

The translation follows ollama's openai/openai.go and middleware/openai.go, so a client sees
the same defaults (temperature and top_p 1.0 unless given), ids (`chatcmpl-<0..998>`,
`cmpl-<0..998>`), `system_fingerprint: "fp_ollama"`, usage from the prompt/eval counts, and the
same key order in every object. Beyond ollama: `max_completion_tokens`, `n` (1 only),
`tool_choice` (none/auto/required/a named function; the last two are enforced by a grammar in
the runner), a one-element `prompt` list on /v1/completions, and an empty list rather than
`null` from an empty /v1/models.

Everything here is pure: no I/O, no model. Problems raise OpenAIError, which carries the HTTP
status and renders the OpenAI error object.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.errors import RequestError
from runner.jsonbody import BodyError, decode_json, json_type
from runner.requests import typed_field

FINGERPRINT = "fp_ollama"
_IMAGE_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp"))
_EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "max": "max",
            "xhigh": "max", "ultra": "max"}


class OpenAIError(Exception):
    """A request the OpenAI layer answers with an error object and `status`."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param)


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """openai.NewError: the type follows the status (400, 404, anything else)."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


# ----------------------------------------------------------------- typed field access


def field(body: Mapping[str, Any], key: str, kind: str, struct_name: str) -> Any:
    """body[key] when it has the JSON type Go would decode into `kind`; None when absent or null."""
    try:
        return typed_field(body, key, kind, struct_name)
    except RequestError as exc:
        raise OpenAIError(400, exc.message, key) from None


def decode_body(raw: bytes, struct_name: str) -> dict[str, Any]:
    """The JSON object of a request body (400 for an empty, malformed or non-object body)."""
    try:
        body = decode_json(raw)
    except BodyError as exc:
        raise OpenAIError(400, exc.message) from None
    if not isinstance(body, dict):
        raise OpenAIError(400, f"json: cannot unmarshal {json_type(body)} into Go value of type openai.{struct_name}")
    return body


def _stream_flags(body: Mapping[str, Any], struct_name: str) -> tuple[bool, bool]:
    stream = bool(field(body, "stream", "bool", struct_name))
    options = field(body, "stream_options", "object", struct_name) or {}
    include_usage = field(options, "include_usage", "bool", "StreamOptions")
    return stream, bool(include_usage)


def _stops(value: Any, strict: bool) -> list[str] | None:
    """`stop` as a string or list; chat drops non-strings, completions reject them (as ollama)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return None
    for item in value:
        if strict and not isinstance(item, str):
            raise OpenAIError(400, f"invalid type for 'stop' field: {json_type(item)}", "stop")
    return [item for item in value if isinstance(item, str)]


def _max_tokens(body: Mapping[str, Any], struct_name: str) -> int | None:
    newer = field(body, "max_completion_tokens", "int", struct_name)
    return newer if newer is not None else field(body, "max_tokens", "int", struct_name)


def _check_n(body: Mapping[str, Any], struct_name: str) -> None:
    n = field(body, "n", "int", struct_name)
    if n is not None and n != 1:
        raise OpenAIError(400, "only n=1 is supported", "n")


# ----------------------------------------------------------------- chat requests


@dataclass(frozen=True)
class ChatPlan:
    """A chat completion request as the runner takes it, plus how to answer."""

    request: dict[str, Any]  # an ollama ChatRequest
    stream: bool
    include_usage: bool
    force_tools: list[str] | None  # a call to one of these is required (tool_choice)


def decode_image_url(url: str) -> str:
    """A data URI's base64 payload (ollama's decodeImageURL); remote URLs are not fetched."""
    if url.startswith(("http://", "https://")):
        raise OpenAIError(400, "image URLs are not currently supported, please use base64 encoded data instead")
    if url.startswith("data:;base64,"):
        payload = url.removeprefix("data:;base64,")
    elif prefix := next((p for p in _IMAGE_PREFIXES if url.startswith(p)), None):
        payload = url.removeprefix(prefix)
    else:
        raise OpenAIError(400, "invalid image input")
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise OpenAIError(400, "invalid image input") from None
    return payload


def _content_part(part: Any) -> dict[str, Any]:
    """One element of a content array as its own ollama message fields (text or images)."""
    if not isinstance(part, dict):
        raise OpenAIError(400, "invalid message format")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise OpenAIError(400, "invalid message format")
        return {"content": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise OpenAIError(400, "invalid message format")
        return {"content": "", "images": [decode_image_url(url)]}
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        if not isinstance(data, str):
            raise OpenAIError(400, "invalid input_audio format")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise OpenAIError(400, f"invalid input_audio base64 data: {exc}") from None
        return {"content": "", "images": [data]}
    raise OpenAIError(400, "invalid message format")


def _from_tool_calls(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool_calls (arguments as JSON text) → ollama's (arguments as an object)."""
    if not isinstance(calls, list):
        raise OpenAIError(400, "invalid tool calls", "messages")
    converted = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise OpenAIError(400, "invalid tool calls", "messages")
        text = function.get("arguments")
        try:
            arguments = decode_json(text) if isinstance(text, str) and text.strip() else {}
        except BodyError:
            raise OpenAIError(400, "invalid tool call arguments", "messages") from None
        if not isinstance(arguments, dict):
            raise OpenAIError(400, "invalid tool call arguments", "messages")
        entry: dict[str, Any] = {"function": {"name": function["name"], "arguments": arguments}}
        if isinstance(call.get("id"), str) and call["id"]:
            entry["id"] = call["id"]
        converted.append(entry)
    return converted


def _tool_name_for(messages: Sequence[Any], call_id: str) -> str:
    """The function a tool result answers, found by its tool_call_id (last one wins)."""
    for message in reversed(messages):
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            if isinstance(call, dict) and call.get("id") == call_id:
                function = call.get("function") or {}
                return function.get("name", "") if isinstance(function, dict) else ""
    return ""


def _go_type_name(value: Any) -> str:
    """Go's %T of a decoded JSON value, as ollama's "invalid message content type" prints it."""
    if value is None:
        return "<nil>"
    return {bool: "bool", int: "float64", float: "float64", dict: "map[string]interface {}"}.get(type(value), "string")


def _chat_messages(raw: list[Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise OpenAIError(400, "invalid message format", "messages")
        role = field(item, "role", "string", "Message") or ""
        call_id = field(item, "tool_call_id", "string", "Message") or ""
        reasoning = field(item, "reasoning", "string", "Message") or ""
        calls = _from_tool_calls(item["tool_calls"]) if item.get("tool_calls") is not None else None
        base: dict[str, Any] = {"role": role}
        if role.lower() == "tool":
            tool_name = field(item, "name", "string", "Message") or (_tool_name_for(raw, call_id) if call_id else "")
            if tool_name:
                base["tool_name"] = tool_name
        if call_id:
            base["tool_call_id"] = call_id
        if reasoning:
            base["thinking"] = reasoning
        content = item.get("content")
        if isinstance(content, str):
            parts = [{"content": content}]
        elif isinstance(content, list):
            parts = [_content_part(part) for part in content] or [{"content": ""}]
        elif calls is not None:
            parts = [{"content": ""}]
        else:
            raise OpenAIError(400, f"invalid message content type: {_go_type_name(content)}", "messages")
        for part in parts:
            messages.append({"role": role, **part})
        messages[-1].update(base)  # tool calls, names and ids belong to the last part
        if calls:
            messages[-1]["tool_calls"] = calls
    return messages


def _tool_choice(value: Any, tools: list[Any] | None) -> tuple[list[str] | None, bool]:
    """(names one of which must be called or None, whether tools stay available)."""
    names = [t["function"]["name"] for t in tools or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)
             and isinstance(t["function"].get("name"), str)]
    if value is None or value == "auto":
        return None, True
    if value == "none":
        return None, False
    if not tools:
        raise OpenAIError(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                               "specified.", "tool_choice")
    if value == "required":
        return names, True
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        wanted = value["function"].get("name")
        if wanted in names:
            return [wanted], True
        raise OpenAIError(400, f"Invalid value for 'tool_choice': no function named {wanted!r} was specified in "
                               "'tools'.", "tool_choice")
    raise OpenAIError(400, "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a named "
                           "function.", "tool_choice")


def _response_format(value: Any) -> Any:
    """`format` for the runner: "json" for json_object, the schema for json_schema."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise OpenAIError(400, f"json: cannot unmarshal {json_type(value)} into Go struct field "
                               "ChatCompletionRequest.response_format of type openai.ResponseFormat",
                          "response_format")
    kind = str(value.get("type") or "").strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = value.get("json_schema")
        return schema.get("schema") if isinstance(schema, dict) else None
    return None


def _think(body: Mapping[str, Any]) -> bool | str | None:
    reasoning = field(body, "reasoning", "object", "ChatCompletionRequest")
    effort = reasoning.get("effort") if reasoning else field(body, "reasoning_effort", "string",
                                                                 "ChatCompletionRequest")
    return think_from_effort(effort, "reasoning_effort")


def think_from_effort(effort: Any, param: str) -> bool | str | None:
    """A reasoning effort as ollama's `think` (thinkFromReasoningEffort); None when not given."""
    if not effort:
        return None
    if not isinstance(effort, str) or effort not in _EFFORTS:
        raise OpenAIError(400, f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", "high", '
                               '"xhigh", "ultra", "max", or "none")', param)
    return _EFFORTS[effort]


def _sampling(body: Mapping[str, Any], struct_name: str) -> dict[str, Any]:
    """The options both endpoints set: temperature and top_p default to 1.0, as in ollama."""
    options: dict[str, Any] = {}
    max_tokens = _max_tokens(body, struct_name)
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    temperature = field(body, "temperature", "float64", struct_name)
    options["temperature"] = 1.0 if temperature is None else temperature
    seed = field(body, "seed", "int", struct_name)
    if seed is not None:
        options["seed"] = seed
    for key in ("frequency_penalty", "presence_penalty"):
        value = field(body, key, "float64", struct_name)
        if value is not None:
            options[key] = value
    top_p = field(body, "top_p", "float64", struct_name)
    options["top_p"] = 1.0 if top_p is None else top_p
    return options


def chat_plan(body: Mapping[str, Any]) -> ChatPlan:
    """FromChatRequest: an OpenAI chat completion request → the runner's ChatRequest."""
    struct_name = "ChatCompletionRequest"
    model = field(body, "model", "string", struct_name) or ""
    raw_messages = field(body, "messages", "array", struct_name)
    if not raw_messages:
        raise OpenAIError(400, "[] is too short - 'messages'", "messages")
    _check_n(body, struct_name)
    stream, include_usage = _stream_flags(body, struct_name)
    tools = field(body, "tools", "array", struct_name)
    force_tools, keep_tools = _tool_choice(body.get("tool_choice"), tools)
    options = _sampling(body, struct_name)
    stops = _stops(body.get("stop"), strict=False)
    if stops is not None:
        options["stop"] = stops
    request: dict[str, Any] = {
        "model": model,
        "messages": _chat_messages(raw_messages),
        "options": options,
        "stream": stream,
    }
    if (fmt := _response_format(body.get("response_format"))) is not None:
        request["format"] = fmt
    if tools and keep_tools:
        request["tools"] = tools
    if (think := _think(body)) is not None:
        request["think"] = think
    if field(body, "logprobs", "bool", struct_name):
        request["logprobs"] = True
    top_logprobs = field(body, "top_logprobs", "int", struct_name)
    if top_logprobs:
        request["top_logprobs"] = top_logprobs
    if field(body, "_debug_render_only", "bool", struct_name):
        request["_debug_render_only"] = True
    return ChatPlan(request, stream, include_usage, force_tools)


# ----------------------------------------------------------------- completion and embedding requests


@dataclass(frozen=True)
class CompletionPlan:
    request: dict[str, Any]  # an ollama GenerateRequest
    stream: bool
    include_usage: bool


def completion_plan(body: Mapping[str, Any]) -> CompletionPlan:
    """FromCompleteRequest: `prompt` is one string (a list holding exactly one is accepted too)."""
    struct_name = "CompletionRequest"
    model = field(body, "model", "string", struct_name) or ""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if prompt is not None and not isinstance(prompt, str):
        raise OpenAIError(400, f"json: cannot unmarshal {json_type(prompt)} into Go struct field "
                               f"{struct_name}.prompt of type string", "prompt")
    _check_n(body, struct_name)
    stream, include_usage = _stream_flags(body, struct_name)
    options = _sampling(body, struct_name)
    options["top_p"] = options["top_p"] or 1.0  # CompletionRequest.top_p is a plain float: 0 means unset
    options.setdefault("frequency_penalty", 0.0)
    options.setdefault("presence_penalty", 0.0)
    stops = _stops(body.get("stop"), strict=True)
    if stops is not None:
        options["stop"] = stops
    request: dict[str, Any] = {"model": model, "prompt": prompt or "", "options": options, "stream": stream}
    suffix = field(body, "suffix", "string", struct_name)
    if suffix:
        request["suffix"] = suffix
    logprobs = field(body, "logprobs", "int", struct_name)
    if logprobs:
        request["logprobs"] = True
        request["top_logprobs"] = logprobs
    if field(body, "_debug_render_only", "bool", struct_name):
        request["_debug_render_only"] = True
    return CompletionPlan(request, stream, include_usage)


@dataclass(frozen=True)
class EmbeddingPlan:
    request: dict[str, Any]  # an ollama EmbedRequest
    base64: bool


def embedding_plan(body: Mapping[str, Any]) -> EmbeddingPlan:
    """EmbeddingsMiddleware: validates encoding_format and input before the runner sees them."""
    struct_name = "EmbedRequest"
    model = field(body, "model", "string", struct_name) or ""
    dimensions = field(body, "dimensions", "int", struct_name)
    encoding = field(body, "encoding_format", "string", struct_name) or ""
    if encoding and encoding.lower() not in ("float", "base64"):
        raise OpenAIError(400, f"Invalid value for 'encoding_format' = {encoding}. Supported values: "
                               "['float', 'base64'].", "encoding_format")
    value = body.get("input")
    if value is None or value == []:
        raise OpenAIError(400, "invalid input", "input")
    if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
        raise OpenAIError(400, "invalid input type", "input")
    inputs = [value] if isinstance(value, str) else value
    if any(not text for text in inputs):
        raise OpenAIError(400, "input must not contain empty strings", "input")
    request: dict[str, Any] = {"model": model, "input": inputs}
    if dimensions:
        request["dimensions"] = dimensions
    return EmbeddingPlan(request, encoding.lower() == "base64")


# ----------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    """ollama's ids: the prefix and a random number below 999."""
    return f"{prefix}-{random.randrange(999)}"


def usage(final: Mapping[str, Any]) -> dict[str, int]:
    prompt, completion = final.get("prompt_eval_count", 0), final.get("eval_count", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def to_tool_calls(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """ToToolCalls: arguments become JSON text, the index comes from the runner's call index."""
    return [
        {
            "id": call.get("id", ""),
            "index": call["function"].get("index", 0),
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": json.dumps(call["function"]["arguments"], ensure_ascii=False, separators=(",", ":")),
            },
        }
        for call in calls
    ]


def _logprobs(chunk: Mapping[str, Any]) -> dict[str, Any] | None:
    return {"content": chunk["logprobs"]} if chunk.get("logprobs") else None


def chat_completion(completion_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """ToChatCompletion: the non-streamed answer from the runner's collected chat response."""
    message = result.get("message", {})
    calls = to_tool_calls(message.get("tool_calls", []))
    out_message: dict[str, Any] = {"role": message.get("role", "assistant"), "content": message.get("content", "")}
    if message.get("thinking"):
        out_message["reasoning"] = message["thinking"]
    if calls:
        out_message["tool_calls"] = calls
    reason = result.get("done_reason") or None
    if reason == "stop" and calls:
        reason = "tool_calls"
    choice: dict[str, Any] = {"index": 0, "message": out_message, "finish_reason": reason}
    if (logprobs := _logprobs(result)) is not None:
        choice["logprobs"] = logprobs
    answer: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.get("model", ""),
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": usage(result),
    }
    if "_debug_info" in result:
        answer["_debug_info"] = result["_debug_info"]
    return answer


class ChatStream:
    """ChatWriter's streaming half: runner chunks in, `chat.completion.chunk` objects out.

    The first chunk carries the role; thinking and content arriving together are split into two
    chunks; the metrics-only final chunk produces no content chunk, only the finish chunk with an
    empty delta (`tool_calls` when a call was sent), then the usage chunk when asked for.
    """

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self.id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self._first_sent = False
        self._tool_call_sent = False

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }

    def _delta_chunk(self, delta: dict[str, Any], logprobs: dict[str, Any] | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return self._chunk([choice])

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The OpenAI chunks for one runner chunk (several at the end of the stream)."""
        message = chunk.get("message", {})
        content = message.get("content", "")
        thinking = message.get("thinking", "")
        calls = to_tool_calls(message.get("tool_calls", []))
        logprobs = _logprobs(chunk)
        done = bool(chunk.get("done"))
        out: list[dict[str, Any]] = []
        trailer = done and self._first_sent and not (content or thinking or calls or logprobs)
        if not trailer:
            role = {} if self._first_sent else {"role": "assistant"}
            if thinking and (content or calls):
                out.append(self._delta_chunk({**role, "reasoning": thinking}, logprobs))
                rest: dict[str, Any] = {"content": content}
                if calls:
                    rest["tool_calls"] = calls
                out.append(self._delta_chunk(rest, None))
            else:
                delta: dict[str, Any] = {**role, "content": content}
                if thinking:
                    delta["reasoning"] = thinking
                if calls:
                    delta["tool_calls"] = calls
                out.append(self._delta_chunk(delta, logprobs))
            self._first_sent = True
            self._tool_call_sent = self._tool_call_sent or bool(calls)
        if done:
            reason = chunk.get("done_reason") or "stop"
            if reason == "stop" and self._tool_call_sent:
                reason = "tool_calls"
            out.append(self._chunk([{"index": 0, "delta": {}, "finish_reason": reason}]))
            if self.include_usage:
                out.append({**self._chunk([]), "usage": usage(chunk)})
        return out


def text_completion(completion_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """ToCompletion: the non-streamed /v1/completions answer."""
    choice: dict[str, Any] = {"text": result.get("response", ""), "index": 0,
                              "finish_reason": result.get("done_reason") or None}
    if (logprobs := _logprobs(result)) is not None:
        choice["logprobs"] = logprobs
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": result.get("model", ""),
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": usage(result),
    }


def completion_chunks(completion_id: str, chunk: Mapping[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """CompleteWriter: one chunk per runner chunk (zeroed usage on each when usage is asked for,
    as ollama does), then a usage-only chunk after the last."""
    choice: dict[str, Any] = {"text": chunk.get("response", ""), "index": 0,
                              "finish_reason": chunk.get("done_reason") or None}
    if (logprobs := _logprobs(chunk)) is not None:
        choice["logprobs"] = logprobs
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "choices": [choice],
        "model": chunk.get("model", ""),
        "system_fingerprint": FINGERPRINT,
    }
    if include_usage:
        out["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if not (chunk.get("done") and include_usage):
        return [out]
    return [out, {**out, "choices": [], "usage": usage(chunk)}]


def _float32_base64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embedding_list(model: str, result: Mapping[str, Any], as_base64: bool) -> dict[str, Any]:
    """ToEmbeddingList: vectors as float lists or base64 of little-endian float32."""
    data = [
        {"object": "embedding", "embedding": _float32_base64(vector) if as_base64 else vector, "index": i}
        for i, vector in enumerate(result.get("embeddings") or [])
    ]
    tokens = result.get("prompt_eval_count", 0)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def model_object(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": entry["id"], "object": "model", "created": entry["created"], "owned_by": entry["owned_by"]}
