"""The GGUF's own Jinja `tokenizer.chat_template`, for models whose manifest has no Go template.

Rendered the way Hugging Face's `apply_chat_template` does (what llama-server's --jinja mode
mirrors): a sandboxed environment with trim_blocks/lstrip_blocks and loop controls, variables
`messages`, `tools`, `add_generation_prompt=True`, `bos_token`, `eos_token` (and
`enable_thinking` when the request sets `think`), and the helpers
`raise_exception`, `strftime_now` and a `tojson` that keeps non-ASCII text as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runner.errors import RequestError


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


class JinjaChatTemplate:
    """A compiled chat template; render() raises RequestError(500) with Jinja's message on failure."""

    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise RequestError(500, f"chat template: {exc}") from None
        self._bos = bos_token
        self._eos = eos_token

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        think: bool | str | None = None,
    ) -> str:
        """The prompt; a set `think` becomes `enable_thinking`, the switch Qwen-style templates read."""
        extra = {} if think is None else {"enable_thinking": think is not False}
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                tools=list(tools) if tools else None,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
                **extra,
            )
        except TemplateError as exc:
            raise RequestError(500, f"chat template: {exc}") from None


def has_tool_support(source: str) -> bool:
    """ollama's heuristic for a Jinja template's tool capability (server/images.go)."""
    return "tools" in source or "tool_call" in source


def has_thinking_support(source: str) -> bool:
    """ollama's heuristic for a Jinja template's thinking capability (server/images.go)."""
    if "<think>" in source and "</think>" in source:
        return True
    splits = "content.split('</think>')" in source or 'content.split("</think>")' in source
    return splits and "reasoning_content" not in source and "<SPECIAL_12>" not in source
