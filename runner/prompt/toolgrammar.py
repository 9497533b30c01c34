"""A GBNF grammar that makes a model write exactly one well-formed call to one of some tools.

OpenAI's `tool_choice: "required"` (or a named function) promises a tool call. ollama ignores
tool_choice; llama.cpp's server enforces it with a grammar, which is what happens here: the
output is constrained to the model's own tool-call tag (read from its template, see
runner.tools) followed by `{"name": "<tool>", "arguments": {...}}` with the arguments matching
the tool's JSON-schema parameters. The same streaming parser that reads free-form calls then
reads the forced one, so both paths produce identical tool_calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from runner.errors import RequestError

_XML_TAG = re.compile(r"<([A-Za-z_][\w.-]*)>")


def _parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    parameters = function.get("parameters")
    return dict(parameters) if isinstance(parameters, Mapping) else {"type": "object"}


def _call_schema(tools: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """JSON schema of one call object; `$defs`/`definitions` are hoisted so `#/$defs/x` still resolves."""
    hoisted: dict[str, dict[str, Any]] = {}
    variants = []
    for tool in tools:
        name = (tool.get("function") or {}).get("name")
        if name not in names:
            continue
        parameters = _parameters(tool)
        for key in ("$defs", "definitions"):
            if isinstance(parameters.get(key), Mapping):
                hoisted.setdefault(key, {}).update(parameters.pop(key))
        variants.append({
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": parameters},
            "required": ["name", "arguments"],
        })
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {**schema, **hoisted}


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def tool_call_grammar(tag: str, tools: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """GBNF for `<tag> {"name": ..., "arguments": ...}` calling one of `names` (all in `tools`).

    A `{` tag means the call object itself is the marker. Brackets the tag opens are closed
    after the call, and an XML-like tag (`<tool_call>`) gets its closing tag, so the raw output
    is well formed too.
    """
    try:
        call = json_schema_to_gbnf(json.dumps(_call_schema(tools, names)), prop_order=["name", "arguments"])
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors on bad schemas
        raise RequestError(400, f"invalid JSON schema in tool parameters: {exc}") from None
    call = re.sub(r"^root ::=", "tool-call ::=", call, count=1, flags=re.MULTILINE)
    if tag == "{":
        return f"root ::= tool-call\n{call}"
    closing = "]" * max(tag.count("[") - tag.count("]"), 0)
    if match := _XML_TAG.fullmatch(tag):
        closing += f"\n</{match.group(1)}>"
    tail = f" {_literal(closing)}" if closing else ""
    return f'root ::= {_literal(tag)} "\\n"? tool-call{tail}\n{call}'
