"""The OpenAI Responses API (`POST /v1/responses`) translated to and from the runner's chat.

The translation follows ollama's openai/responses.go and its ResponsesMiddleware, so a client
sees what ollama answers: `input` as a string or as items (messages, `function_call`,
`function_call_output`, `reasoning` carried back as the next assistant message's thinking),
`instructions` as a system message, temperature 1.0 unless given, top_p only when given,
`max_output_tokens` as num_predict, ids `resp_N`/`msg_N`/`rs_N`/`fc_N_i`, and a response object
that always says `status: "completed"` and repeats the request's settings. Like ollama, nothing
is stored: `previous_response_id` is not read and the answer's is null. Beyond ollama:
`tool_choice` is honoured as on /v1/chat/completions ("required" or a named function is
enforced by a grammar, "none" hides the tools) and echoed; `text.format` `json_object` asks for
JSON; a tool result is named after the call it answers; text written before a tool call is kept
as its own message item, closed before the call's item so output indexes never collide; the
built-in `web_search` tool is refused (corral has no cloud; ollama says the same when its cloud
is disabled, once the model calls it).

Everything here is pure: no I/O, no model. Problems raise OpenAIError (400 unless said).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.http.openai_wire import OpenAIError, decode_image_url, field, think_from_effort, to_tool_calls
from runner.jsonbody import BodyError, decode_json, json_type
from runner.requests import name_tool_results

REQUEST = "ResponsesRequest"
CLOUD_DISABLED = "ollama cloud is disabled: web search is unavailable"


def _number() -> int:
    return random.randrange(999999)


# ----------------------------------------------------------------- requests


@dataclass(frozen=True)
class ResponsesPlan:
    """A Responses request as the runner takes it, plus what the answer repeats back."""

    request: dict[str, Any]  # an ollama ChatRequest
    stream: bool
    force_tools: list[str] | None
    echo: dict[str, Any]  # the settings every response object repeats


def _text(part: Mapping[str, Any]) -> str:
    text = part.get("text")
    return text if isinstance(text, str) else ""


def _content(value: Any, where: str) -> tuple[str, list[str]]:
    """Message content (a string or content parts) as text and base64 images."""
    if isinstance(value, str) or value is None:
        return value or "", []
    if not isinstance(value, list):
        raise OpenAIError(400, f"{where}: content must be a string or array", "input")
    text, images = "", []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            text += _text(part)
        elif kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, str) and url:  # a file_id alone names an upload nobody can read here
                images.append(decode_image_url(url))
        elif kind == "input_file":
            raise OpenAIError(400, "file inputs are not currently supported", "input")
        else:
            raise OpenAIError(400, f"{where}: content[{j}]: unknown content type: {kind or ''}", "input")
    return text, images


def _arguments(text: Any, where: str) -> dict[str, Any]:
    """A function_call's arguments (JSON text) as the object the runner renders."""
    if not isinstance(text, str) or not text:
        return {}
    try:
        arguments = decode_json(text)
    except BodyError as exc:
        raise OpenAIError(400, f"failed to parse function call arguments: {exc.message}", "input") from None
    if not isinstance(arguments, dict):
        raise OpenAIError(400, f"{where}: failed to parse function call arguments: not a JSON object", "input")
    return arguments


def _reasoning_text(item: Mapping[str, Any]) -> str:
    """What a reasoning item carries back: ollama puts the thinking in `encrypted_content`; a
    client that kept only the summary gets that."""
    content = item.get("encrypted_content")
    if isinstance(content, str) and content:
        return content
    summary = item.get("summary")
    return "".join(_text(part) for part in summary if isinstance(part, dict)) if isinstance(summary, list) else ""


def _answers(item: Any, call_ids: Sequence[str]) -> bool:
    return isinstance(item, dict) and item.get("type") == "function_call_output" and item.get("call_id") in call_ids


def _input_messages(items: list[Any]) -> list[dict[str, Any]]:
    """FromResponsesRequest's item loop: input items → ollama messages."""
    messages: list[dict[str, Any]] = []
    thinking = ""  # a reasoning item waits for the assistant message it belongs to
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise OpenAIError(400, f"{where}: json: cannot unmarshal {json_type(item)} into an input item", "input")
        kind = item.get("type") or ("message" if item.get("role") else "")
        last = messages[-1] if messages else None
        if kind == "reasoning":
            thinking = _reasoning_text(item)
        elif kind == "message":
            role = item.get("role") if isinstance(item.get("role"), str) else ""
            text, images = _content(item.get("content"), where)
            message: dict[str, Any] = {"role": role, "content": text}
            if images:
                message["images"] = images
            if role == "assistant" and thinking:
                message["thinking"], thinking = thinking, ""
            # an assistant message replayed between a call and its output joins the call's message,
            # so the result still follows the call it answers
            following = items[i + 1] if i + 1 < len(items) else None
            if (role == "assistant" and last is not None and last["role"] == "assistant"
                    and _answers(following, [c.get("id") for c in last.get("tool_calls", [])])):
                last["content"] += ("\n" if last["content"] and text else "") + text
                if images:
                    last.setdefault("images", []).extend(images)
                if "thinking" in message:
                    last["thinking"] = message["thinking"]
                continue
            messages.append(message)
        elif kind == "function_call":
            call = {"id": item.get("call_id") or "",
                    "function": {"name": item.get("name") or "", "arguments": _arguments(item.get("arguments"), where)}}
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": ""}
                messages.append(last)
            last.setdefault("tool_calls", []).append(call)
            if thinking:
                last["thinking"], thinking = thinking, ""
        elif kind == "function_call_output":
            output = item.get("output")
            if output is not None and not isinstance(output, str | list):
                raise OpenAIError(400, f"{where}: output must be a string or array", "input")
            text, images = _content(output, where)
            result: dict[str, Any] = {"role": "tool", "content": text, "tool_call_id": item.get("call_id") or ""}
            if images:
                result["images"] = images
            messages.append(result)
        elif kind == "web_search_call":
            continue  # a built-in search's record; the assistant message after it holds what it found
        elif not kind:
            raise OpenAIError(400, f"{where}: input item missing required 'type' field", "input")
        else:
            raise OpenAIError(400, f'{where}: unknown input item type: "{kind}"', "input")
    if thinking:
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    name_tool_results(messages)
    return messages


def _function_tools(tool: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One declared tool as runner tools: a namespace becomes its members, named `namespace.member`."""
    kind = tool.get("type")
    if kind in ("web_search", "web_search_preview"):
        raise OpenAIError(403, CLOUD_DISABLED, "tools")
    if kind == "namespace":
        prefix = f"{tool['name']}." if isinstance(tool.get("name"), str) and tool["name"] else ""
        members = tool.get("tools") if isinstance(tool.get("tools"), list) else []
        expanded = [t for member in members if isinstance(member, dict) for t in _function_tools(member)]
        for t in expanded:
            if not t["function"]["name"].startswith(prefix):
                t["function"]["name"] = prefix + t["function"]["name"]
        return expanded
    function: dict[str, Any] = {"name": tool.get("name") if isinstance(tool.get("name"), str) else ""}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if tool.get("parameters") is not None:
        function["parameters"] = tool["parameters"]
    return [{"type": "function", "function": function}]


def _echoed_tool(tool: Any) -> Any:
    if not isinstance(tool, dict):
        return tool
    echoed = {key: tool.get(key) for key in ("type", "name", "description", "strict", "parameters")}
    if "tools" in tool:
        echoed["tools"] = [_echoed_tool(member) for member in tool["tools"] or []]
    return echoed


def _tool_choice(value: Any, names: list[str]) -> tuple[list[str] | None, bool]:
    """(names one of which must be called or None, whether the tools stay available)."""
    if value is None or value == "auto":
        return None, True
    if value == "none":
        return None, False
    if not names:
        raise OpenAIError(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                               "specified.", "tool_choice")
    if value == "required":
        return names, True
    if isinstance(value, dict) and value.get("type") == "function":
        if value.get("name") in names:
            return [value["name"]], True
        raise OpenAIError(400, f"Invalid value for 'tool_choice': no function named {value.get('name')!r} was "
                               "specified in 'tools'.", "tool_choice")
    raise OpenAIError(400, "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a function.",
                      "tool_choice")


def _text_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    text = field(body, "text", "object", REQUEST)
    fmt = field(text, "format", "object", "ResponsesText") if text else None
    if fmt is not None and not isinstance(fmt.get("type"), str):
        raise OpenAIError(400, "text.format.type must be a string", "text")
    return fmt


def responses_plan(body: Mapping[str, Any]) -> ResponsesPlan:
    """FromResponsesRequest: a Responses request → the runner's ChatRequest and what to echo."""
    model = field(body, "model", "string", REQUEST) or ""
    instructions = field(body, "instructions", "string", REQUEST) or ""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    value = body.get("input")
    if isinstance(value, str):
        if value:
            messages.append({"role": "user", "content": value})
    elif isinstance(value, list):
        messages += _input_messages(value)
    elif value is not None:
        raise OpenAIError(400, f"input must be a string or array: json: cannot unmarshal {json_type(value)} into "
                               "Go value of type []json.RawMessage", "input")

    options: dict[str, Any] = {}
    temperature = field(body, "temperature", "float64", REQUEST)
    options["temperature"] = 1.0 if temperature is None else temperature
    top_p = field(body, "top_p", "float64", REQUEST)
    if top_p is not None:
        options["top_p"] = top_p
    max_output_tokens = field(body, "max_output_tokens", "int", REQUEST)
    if max_output_tokens is not None:
        options["num_predict"] = max_output_tokens
    reasoning = field(body, "reasoning", "object", REQUEST) or {}
    think = think_from_effort(reasoning.get("effort"), "reasoning")

    raw_tools = field(body, "tools", "array", REQUEST) or []
    tools = [t for tool in raw_tools for t in _function_tools(tool if isinstance(tool, dict) else {})]
    force_tools, keep_tools = _tool_choice(body.get("tool_choice"), [t["function"]["name"] for t in tools])
    fmt = _text_format(body)

    request: dict[str, Any] = {"model": model, "messages": messages, "options": options}
    if tools and keep_tools:
        request["tools"] = tools
    if fmt and fmt["type"] == "json_schema" and fmt.get("schema") is not None:
        request["format"] = fmt["schema"]
    elif fmt and fmt["type"] == "json_object":
        request["format"] = "json"
    if think is not None:
        request["think"] = think
    stream = bool(field(body, "stream", "bool", REQUEST))
    request["stream"] = stream
    echo = {
        "instructions": instructions or None,
        "tools": [_echoed_tool(tool) for tool in raw_tools],
        "tool_choice": body.get("tool_choice") if body.get("tool_choice") is not None else "auto",
        "truncation": body.get("truncation") if isinstance(body.get("truncation"), str) else "disabled",
        "text": {"format": fmt or {"type": "text"}},
        "top_p": 1.0 if top_p is None else top_p,
        "temperature": options["temperature"],
        "reasoning": ({"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
                      if reasoning.get("effort") or reasoning.get("summary") else None),
        "max_output_tokens": max_output_tokens,
        "background": bool(body.get("background")),
    }
    return ResponsesPlan(request, stream, force_tools, echo)


# ----------------------------------------------------------------- responses


def new_response_id() -> str:
    return f"resp_{_number()}"


def _usage(final: Mapping[str, Any]) -> dict[str, Any]:
    prompt, output = final.get("prompt_eval_count", 0), final.get("eval_count", 0)
    return {
        "input_tokens": prompt,
        "output_tokens": output,
        "total_tokens": prompt + output,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def response_object(plan: ResponsesPlan, response_id: str, status: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None, created_at: int, completed_at: int | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response object, in ollama's key order, with the request's settings repeated."""
    echo = plan.echo
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at,
        "status": status,
        "incomplete_details": None,
        "model": plan.request["model"],
        "previous_response_id": None,
        "instructions": echo["instructions"],
        "output": output,
        "error": error,
        "tools": echo["tools"],
        "tool_choice": echo["tool_choice"],
        "truncation": echo["truncation"],
        "parallel_tool_calls": True,
        "text": echo["text"],
        "top_p": echo["top_p"],
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "top_logprobs": 0,
        "temperature": echo["temperature"],
        "reasoning": echo["reasoning"],
        "usage": usage,
        "max_output_tokens": echo["max_output_tokens"],
        "max_tool_calls": None,
        "store": False,
        "background": echo["background"],
        "service_tier": "default",
        "metadata": {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [_text_part(text)]}


def _reasoning_item(item_id: str, thinking: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": thinking}],
            "encrypted_content": thinking}


def _call_item(item_id: str, call: Mapping[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call["function"]
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call["id"],
            "name": function["name"], "arguments": function["arguments"] if status == "completed" else ""}


def to_response(plan: ResponsesPlan, response_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """ToResponse: the non-streamed answer from the runner's collected chat response."""
    message = result.get("message", {})
    calls = to_tool_calls(message.get("tool_calls", []))
    output = []
    if message.get("thinking"):
        output.append(_reasoning_item(f"rs_{response_id}", message["thinking"]))
    if message.get("content") or not calls:
        output.append(_message_item(f"msg_{_number()}", message.get("content", "")))
    output += [_call_item(f"fc_{response_id}_{i}", call) for i, call in enumerate(calls)]
    now = int(time.time())
    return response_object(plan, response_id, "completed", output, _usage(result), now, now)


Event = tuple[str, dict[str, Any]]


class ResponsesStream:
    """ResponsesStreamConverter: runner chunks in, the Responses stream's events out.

    One output item is open at a time (reasoning or a message); thinking, text and tool calls
    each close the other kind's open item, so every item is added, streamed and done at its own
    output index before the next one starts, and `response.completed` lists them all.
    """

    def __init__(self, plan: ResponsesPlan, response_id: str) -> None:
        self.plan = plan
        self.response_id = response_id
        self.created_at = int(time.time())
        self._sequence = 0
        self._started = False
        self._done_items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the reasoning or message item being streamed
        self._open_text = ""

    def _event(self, kind: str, data: dict[str, Any]) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return kind, event

    def _response(self, status: str, usage: dict[str, Any] | None = None, completed: bool = False,
                  error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(self.plan, self.response_id, status, list(self._done_items), usage, self.created_at,
                               int(time.time()) if completed else None, error)

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        return [self._event("response.created", {"response": self._response("in_progress")}),
                self._event("response.in_progress", {"response": self._response("in_progress")})]

    def _open_item(self, item: dict[str, Any]) -> list[Event]:
        self._open, self._open_text = item, ""
        return [self._event("response.output_item.added", {"output_index": len(self._done_items), "item": item})]

    def _close(self) -> list[Event]:
        """Finish the open item: its closing events, then it joins the completed output."""
        item, text, index = self._open, self._open_text, len(self._done_items)
        if item is None:
            return []
        self._open = None
        if item["type"] == "reasoning":
            done = _reasoning_item(item["id"], text)
            events = [self._event("response.reasoning_summary_text.done",
                                  {"item_id": item["id"], "output_index": index, "summary_index": 0, "text": text})]
        else:
            done = _message_item(item["id"], text)
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events = [self._event("response.output_text.done", {**where, "text": text, "logprobs": []}),
                      self._event("response.content_part.done", {**where, "part": _text_part(text)})]
        self._done_items.append(done)
        return [*events, self._event("response.output_item.done", {"output_index": index, "item": done})]

    def _thinking(self, thinking: str) -> list[Event]:
        events = []
        if self._open is None or self._open["type"] != "reasoning":
            events += self._close()
            events += self._open_item({"id": f"rs_{_number()}", "type": "reasoning", "summary": []})
        self._open_text += thinking
        events.append(self._event("response.reasoning_summary_text.delta", {
            "item_id": self._open["id"], "output_index": len(self._done_items), "summary_index": 0, "delta": thinking,
        }))
        return events

    def _text(self, text: str) -> list[Event]:
        events = []
        if self._open is None or self._open["type"] != "message":
            events += self._close()
            item_id = f"msg_{_number()}"
            events += self._open_item({"id": item_id, "type": "message", "status": "in_progress",
                                       "role": "assistant", "content": []})
            events.append(self._event("response.content_part.added", {
                "item_id": item_id, "output_index": len(self._done_items), "content_index": 0,
                "part": _text_part(""),
            }))
        self._open_text += text
        events.append(self._event("response.output_text.delta", {
            "item_id": self._open["id"], "output_index": len(self._done_items), "content_index": 0, "delta": text,
            "logprobs": [],
        }))
        return events

    def _calls(self, calls: list[dict[str, Any]]) -> list[Event]:
        events = self._close()
        for i, call in enumerate(calls):
            item_id, index = f"fc_{_number()}_{i}", len(self._done_items)
            done = _call_item(item_id, call)
            where = {"item_id": item_id, "output_index": index}
            events += [
                self._event("response.output_item.added", {"output_index": index,
                                                           "item": _call_item(item_id, call, "in_progress")}),
                self._event("response.function_call_arguments.delta", {**where, "delta": done["arguments"]}),
                self._event("response.function_call_arguments.done", {**where, "arguments": done["arguments"]}),
                self._event("response.output_item.done", {"output_index": index, "item": done}),
            ]
            self._done_items.append(done)
        return events

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        """The events for one runner chunk; the last chunk closes the response."""
        message = chunk.get("message", {})
        events = self._start()
        if message.get("thinking"):
            events += self._thinking(message["thinking"])
        if message.get("content"):
            events += self._text(message["content"])
        if message.get("tool_calls"):
            events += self._calls(to_tool_calls(message["tool_calls"]))
        if chunk.get("done"):
            if not self._done_items and self._open is None:
                events += self._text("")  # an empty answer is still a message, as in the non-streamed one
            events += self._close()
            events.append(self._event("response.completed", {
                "response": self._response("completed", _usage(chunk), completed=True),
            }))
        return events

    def fail(self, status: int, message: str) -> list[Event]:
        """A failure mid-stream: `response.failed`, whose response carries the error."""
        code = "server_error" if status >= 500 else "invalid_prompt"
        return [*self._start(), self._event("response.failed", {
            "response": self._response("failed", error={"code": code, "message": message}),
        })]
