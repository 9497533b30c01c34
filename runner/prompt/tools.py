"""Tool calls in model output, found the way ollama's generic tools parser finds them.

Models trained for tool use announce a call with a marker that their chat template also uses
when it replays earlier calls (`<tool_call>`, `[TOOL_CALLS]`, or just a JSON object). The tag is
therefore read from the template, and the streamed output is scanned for it: text before the
tag is content, what follows is searched for a requested tool's name and the JSON object that
carries its arguments.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from runner.template.chat import ToolCall
from runner.template.node import FieldNode, IfNode, ListNode, Node, RangeNode, TextNode, WithNode, walk
from runner.template.template import Template

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_tool_call_id() -> str:
    """An id in ollama's format, `call_` and eight characters of [a-z0-9]."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def infer_tool_tag(template: Template) -> str | None:
    """The text a model writes before its tool calls, inferred like ollama's parseTag.

    It is the first non-blank text inside the first `{{ if ... .ToolCalls ... }}`, cut before
    any `{` (the JSON of the call itself) and trimmed. `{` stands for "a JSON object is the
    call" when no such text exists; None means the template has no notion of tool calls.
    """
    if not template.mentions("ToolCalls"):
        return None
    branch = _find_tool_calls_if(template.root)
    text = _first_text(branch.body.nodes) if branch is not None else None
    if text is None:
        return "{"
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or "{"


def _mentions_tool_calls(branch: IfNode) -> bool:
    return any(isinstance(arg, FieldNode) and "ToolCalls" in arg.idents for cmd in branch.pipe.cmds for arg in cmd.args)


def _find_tool_calls_if(root: ListNode) -> IfNode | None:
    """The first `{{ if }}` whose condition names `.ToolCalls`, in source order."""
    for node, _ in walk(root):
        if isinstance(node, IfNode) and _mentions_tool_calls(node):
            return node
    return None


def _first_text(nodes: Sequence[Node]) -> str | None:
    """Depth-first first non-blank text; an action or an exhausted nested block ends the search."""
    for node in nodes:
        if isinstance(node, TextNode):
            if node.text.strip():
                return node.text
        elif isinstance(node, ListNode):
            found = _first_text(node.nodes)
            if found is not None:
                return found
        elif isinstance(node, IfNode | RangeNode | WithNode):
            found = _first_text(node.body.nodes)
            if found is None and node.else_body is not None:
                found = _first_text(node.else_body.nodes)
            return found
        else:
            return None
    return None


class _State(enum.Enum):
    LOOKING_FOR_TAG = enum.auto()
    TOOL_CALLING = enum.auto()
    DONE = enum.auto()


class ToolCallParser:
    """Streaming splitter of model output into content and tool calls (ollama's tools.Parser).

    Until the tag shows up, output is content, except that a possible beginning of the tag at
    the end of a chunk is held back. A `{` or `[` tag only counts as the first non-blank output;
    anything else first means the model answered in prose and all output is content. After the
    tag, output is consumed as calls: each complete call names one of the request's tools and
    carries a JSON object. As in ollama, text after the tag that is not a call is not returned,
    except for a `{`/`[` tag whose brackets close without any call (plain JSON content).
    """

    def __init__(self, tag: str, tools: Sequence[Mapping[str, Any]]) -> None:
        self.tag = tag
        self._names = [name for name in map(_tool_name, tools) if name]
        self._longest = max(map(len, self._names), default=0)
        self._state = _State.LOOKING_FOR_TAG
        self._buffer = ""
        self._count = 0

    def add(self, text: str) -> tuple[str, list[ToolCall]]:
        """Feeds a chunk of output; returns the content to emit now and the calls completed by it."""
        if self._state is _State.DONE:
            return text, []
        self._buffer += text
        content = ""
        if self._state is _State.LOOKING_FOR_TAG:
            start, found = self._find_tag()
            content, self._buffer = self._buffer[:start], self._buffer[start:]
            if self.tag in ("{", "[") and content.strip():
                self._state = _State.DONE
                content, self._buffer = content + self._buffer, ""
                return content, []
            if not found:
                return content, []
            self._state = _State.TOOL_CALLING
        calls = []
        while (call := self._parse_call()) is not None:
            calls.append(call)
        if self._brackets_closed():
            self._state = _State.DONE
            content, self._buffer = content + self._buffer, ""
        return content, calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        """Flushes at the end of generation: a held-back partial tag, or unparsed JSON content."""
        rest, self._buffer = self._buffer, ""
        if self._state is _State.LOOKING_FOR_TAG:
            return rest, []
        if self._state is _State.TOOL_CALLING and self._count == 0 and self.tag in ("{", "["):
            return rest, []
        return "", []

    def _find_tag(self) -> tuple[int, bool]:
        """Where the tag, or the longest prefix of it ending the buffer, starts."""
        position = self._buffer.find(self.tag)
        if position >= 0:
            return position, True
        for size in range(min(len(self._buffer), len(self.tag)), 0, -1):
            if self._buffer.endswith(self.tag[:size]):
                return len(self._buffer) - size, False
        return len(self._buffer), False

    def _parse_call(self) -> ToolCall | None:
        found = self._find_tool()
        if found is None:
            return None
        name, end = found
        arguments, args_end = _find_arguments(name, self._buffer)
        if arguments is None:
            return None
        call = ToolCall(name=name, arguments=arguments, index=self._count)
        self._count += 1
        self._buffer = self._buffer[max(end, args_end) :]
        return call

    def _find_tool(self) -> tuple[str, int] | None:
        """The earliest (then longest) tool name in the buffer, with the offset just after it.

        Nothing is found while the buffer ends in a proper prefix of a name, so that `get` is
        not taken for a `get_weather` still being streamed.
        """
        buffer = self._buffer
        if not buffer:
            return None
        for size in range(1, min(len(buffer), self._longest) + 1):
            tail = buffer[-size:]
            if any(len(tail) < len(name) and name.startswith(tail) for name in self._names):
                return None
        best: tuple[int, int, str] | None = None
        for name in self._names:
            position = buffer.find(name)
            if position >= 0 and (best is None or (position, -len(name)) < (best[0], best[1])):
                best = (position, -len(name), name)
        if best is None:
            return None
        return best[2], best[0] + len(best[2])

    def _brackets_closed(self) -> bool:
        """For `{`/`[` tags: whether the buffered JSON's outer bracket has closed."""
        if self.tag not in ("{", "["):
            return False
        opening, closing = self.tag, "}" if self.tag == "{" else "]"
        depth = 0
        for char, _ in _scan_unquoted(self._buffer):
            if char == opening:
                depth += 1
            elif char == closing:
                depth -= 1
                if depth == 0:
                    return True
        return False


def _tool_name(tool: Mapping[str, Any]) -> str:
    function = tool.get("function")
    return str(function.get("name") or "") if isinstance(function, Mapping) else ""


def _scan_unquoted(text: str) -> list[tuple[str, int]]:
    """The characters outside JSON strings, with their offsets: quotes never count as brackets."""
    result = []
    in_string = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_string = not in_string
        elif not in_string:
            result.append((char, index))
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _decode_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # a model can write a thousand `[` in a row
        return None
    return value if isinstance(value, dict) else None


def _find_arguments(name: str, buffer: str) -> tuple[dict[str, Any] | None, int]:
    """The arguments of the first complete JSON object in the buffer, and the offset of its `}`.

    In an object with a `name`, they are its `arguments` or `parameters` (an object or a JSON
    string of one); else the value under the tool's own name; else a nested object that
    qualifies; else the object itself. An object that has a `name` but no arguments yields
    none, as in ollama.
    """
    start = -1
    depth = 0
    for char, index in _scan_unquoted(buffer):
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
            if depth == 0 and start != -1:
                data = _decode_object(buffer[start : index + 1])
                if data is None:
                    start = -1
                    continue
                found, arguments = _arguments_in(name, data)
                return (arguments if found else data), index
    return None, 0


def _arguments_in(name: str, data: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    if "name" in data:
        for key in ("arguments", "parameters"):
            arguments = _object_at(data, key)
            if arguments is not None:
                return True, arguments
        return True, None
    arguments = _object_at(data, name)
    if arguments is not None:
        return True, arguments
    for value in data.values():
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, dict):
                found, arguments = _arguments_in(name, child)
                if found:
                    return True, arguments
    return False, None


def _object_at(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return _decode_object(value)
    return None
