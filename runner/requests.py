"""Validation of the structured request fields: messages, tools, images and think.

Ollama decodes these with Go's encoding/json into typed structs, so a wrong JSON type is a 400
before anything else happens. The same checks here produce plain dicts in ollama's JSON shape
(roles lower-cased as api.Message.UnmarshalJSON does, tool-call arguments as objects, images as
the bytes their base64 encodes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner import gobase64
from runner.errors import RequestError
from runner.jsonbody import BodyError, decode_json, json_type

THINK_LEVELS = ("high", "medium", "low", "max")


def _unmarshal_error(value: Any, field: str, go_type: str) -> RequestError:
    kind = json_type(value)
    return RequestError(400, f"json: cannot unmarshal {kind} into Go struct field {field} of type {go_type}")


_GO_TYPES = {
    "string": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float64": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def typed_field(body: Mapping[str, Any], key: str, kind: str, struct_name: str) -> Any:
    """body[key] when it has the JSON type Go would decode into `kind` (a key of _GO_TYPES); None
    when absent or null. The translating layers (OpenAI, Anthropic) decode typed structs too."""
    value = body.get(key)
    if value is None or _GO_TYPES[kind](value):
        return value
    raise _unmarshal_error(value, f"{struct_name}.{key}", kind)


def string_field(req: Mapping[str, Any], key: str) -> str:
    """A top-level string field of a request body ("" when absent)."""
    value = req.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _unmarshal_error(value, key, "string")
    return value


def bool_field(req: Mapping[str, Any], key: str) -> bool | None:
    """A top-level optional bool field of a request body (None when absent)."""
    value = req.get(key)
    if value is not None and not isinstance(value, bool):
        raise _unmarshal_error(value, key, "bool")
    return value


def parse_think(value: Any) -> bool | str | None:
    """`think` as api.ThinkValue accepts it: a bool or a level name; None when absent."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in THINK_LEVELS:
            raise RequestError(
                400, f'invalid think value: "{value}" (must be "high", "medium", "low", "max", true, or false)'
            )
        return value
    raise RequestError(400, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def _optional_string(obj: dict[str, Any], key: str, field: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _unmarshal_error(value, field, "string")
    return value


def _tool_call(call: Any, index: int) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise _unmarshal_error(call, "Message.tool_calls", "api.ToolCall")
    function = call.get("function")
    if not isinstance(function, dict):
        raise _unmarshal_error(function, "ToolCall.function", "api.ToolCallFunction")
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):  # accepted leniently: OpenAI-style clients send JSON text
        try:
            arguments = decode_json(arguments)
        except BodyError:
            raise _unmarshal_error(arguments, "ToolCallFunction.arguments", "api.ToolCallFunctionArguments") from None
    if not isinstance(arguments, dict):
        raise _unmarshal_error(arguments, "ToolCallFunction.arguments", "api.ToolCallFunctionArguments")
    parsed: dict[str, Any] = {
        "function": {
            "index": function.get("index", index),
            "name": _optional_string(function, "name", "ToolCallFunction.name"),
            "arguments": arguments,
        }
    }
    if call.get("id"):
        parsed["id"] = _optional_string(call, "id", "ToolCall.id")
    return parsed


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """ChatRequest.messages → list of message dicts; 400 on wrong JSON types."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _unmarshal_error(value, "ChatRequest.messages", "[]api.Message")
    messages = []
    for item in value:
        if not isinstance(item, dict):
            raise _unmarshal_error(item, "ChatRequest.messages", "api.Message")
        message: dict[str, Any] = {
            "role": _optional_string(item, "role", "Message.role").lower(),
            "content": _optional_string(item, "content", "Message.content"),
        }
        for key in ("thinking", "tool_name", "tool_call_id"):
            if item.get(key):
                message[key] = _optional_string(item, key, f"Message.{key}")
        images = parse_images(item.get("images"), "Message.images")
        if images:
            message["images"] = images
        calls = item.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise _unmarshal_error(calls, "Message.tool_calls", "[]api.ToolCall")
            message["tool_calls"] = [_tool_call(call, i) for i, call in enumerate(calls)]
        messages.append(message)
    return messages


def parse_images(value: Any, field: str) -> tuple[bytes, ...]:
    """A request's `images` ([]api.ImageData): base64 strings, decoded as Go decodes them, so a
    bad one is Go's 400 (`illegal base64 data at input byte N`)."""
    if not value:
        return ()
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise _unmarshal_error(value, field, "[]api.ImageData")
    try:
        return tuple(gobase64.decode(image) for image in value)
    except gobase64.Base64Error as exc:
        raise RequestError(400, str(exc)) from None


def parse_tools(value: Any) -> list[dict[str, Any]]:
    """ChatRequest.tools → list of tool dicts; every tool needs a function object with a name."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _unmarshal_error(value, "ChatRequest.tools", "api.Tools")
    tools = []
    for tool in value:
        if not isinstance(tool, dict):
            raise _unmarshal_error(tool, "ChatRequest.tools", "api.Tool")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _unmarshal_error(function, "Tool.function", "api.ToolFunction")
        name = _optional_string(function, "name", "ToolFunction.name")
        if not name:
            raise RequestError(400, "tool function name is required")
        _optional_string(function, "description", "ToolFunction.description")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _unmarshal_error(parameters, "ToolFunction.parameters", "api.ToolFunctionParameters")
        _optional_string(tool, "type", "Tool.type")
        tools.append(tool)
    return tools


def parse_context(value: Any) -> list[int] | None:
    """GenerateRequest.context: the token ids a previous answer returned; None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise _unmarshal_error(value, "GenerateRequest.context", "[]int")
    return value


def check_token_ids(tokens: list[int], vocab_size: int) -> None:
    """Refuse ids outside the vocabulary before llama.cpp sees them: it indexes its token table
    with them unchecked and the process dies (std::out_of_range). A size of 0 means unknown."""
    if vocab_size <= 0:
        return
    for token in tokens:
        if not 0 <= token < vocab_size:
            raise RequestError(400, f"context contains token {token}, outside the model's vocabulary of {vocab_size}")


def name_tool_results(messages: list[dict[str, Any]]) -> None:
    """Give each tool result without a `tool_name` the name of the function whose call it answers.

    The Responses and Anthropic APIs link a result to its call by id only, but templates name
    results by function (ollama's `.ToolName`); the call is found among the earlier messages.
    """
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if call.get("id"):
                names[call["id"]] = call["function"]["name"]
        if message["role"] == "tool" and not message.get("tool_name") and message.get("tool_call_id") in names:
            message["tool_name"] = names[message["tool_call_id"]]
