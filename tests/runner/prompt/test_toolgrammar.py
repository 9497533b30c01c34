"""Forced tool-call grammars, checked by llama.cpp's own grammar engine on SmolLM2's vocabulary."""

from __future__ import annotations

import ctypes
import json
from collections.abc import Iterator

import llama_cpp as L
import pytest

from runner.engine.native import Vocab, init_backend
from runner.errors import RequestError
from runner.prompt.toolgrammar import tool_call_grammar
from tests.support.models import smollm2_gguf

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }},
    {"type": "function", "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/number"}, "b": {"$ref": "#/$defs/number"}},
            "required": ["a", "b"],
            "$defs": {"number": {"type": "integer"}},
        },
    }},
]


@pytest.fixture(scope="module")
def vocab() -> Iterator[Vocab]:
    init_backend()
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(str(smollm2_gguf()).encode(), params)
    assert model
    yield Vocab(model)
    L.llama_model_free(model)


def accepts(vocab: Vocab, grammar: str, text: str) -> bool:
    """Whether the grammar lets the model write exactly `text` (token by token) and then stop."""
    sampler = L.llama_sampler_init_grammar(vocab.pointer, grammar.encode(), b"root")
    assert sampler, "llama.cpp rejected the grammar"
    try:
        for token in [*vocab.tokenize(text, add_special=False), vocab.eos]:
            cell = L.llama_token_data(token, 0.0, 0.0)
            candidates = L.llama_token_data_array(ctypes.pointer(cell), 1, -1, False)
            L.llama_sampler_apply(sampler, ctypes.byref(candidates))
            if cell.logit == float("-inf"):
                return False
            if token != vocab.eos:
                L.llama_sampler_accept(sampler, token)
        return True
    finally:
        L.llama_sampler_free(sampler)


def call(name: str, arguments: dict) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def test_hermes_tag_gets_its_closing_tag(vocab: Vocab) -> None:
    grammar = tool_call_grammar("<tool_call>", TOOLS, ["get_weather"])
    assert accepts(vocab, grammar, f'<tool_call>\n{call("get_weather", {"city": "Paris"})}\n</tool_call>')
    assert not accepts(vocab, grammar, f'<tool_call>\n{call("add", {"a": 1, "b": 2})}\n</tool_call>')
    assert not accepts(vocab, grammar, "It is sunny.")
    assert not accepts(vocab, grammar, f'<tool_call>\n{call("get_weather", {})}\n</tool_call>')


def test_required_allows_any_listed_tool_with_refs(vocab: Vocab) -> None:
    grammar = tool_call_grammar("{", TOOLS, ["get_weather", "add"])
    assert accepts(vocab, grammar, call("add", {"a": 1, "b": 2}))
    assert accepts(vocab, grammar, call("get_weather", {"city": "Oslo"}))
    assert not accepts(vocab, grammar, call("add", {"a": "one", "b": 2}))


def test_bracket_tags_are_closed(vocab: Vocab) -> None:
    grammar = tool_call_grammar("[TOOL_CALLS] [", TOOLS, ["add"])
    assert accepts(vocab, grammar, f'[TOOL_CALLS] [{call("add", {"a": 1, "b": 2})}]')
    assert not accepts(vocab, grammar, f'[TOOL_CALLS] [{call("add", {"a": 1, "b": 2})}')


def test_bad_parameter_schema_is_a_400() -> None:
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                         "properties": {"x": {"$ref": "#/nowhere"}}}}}]
    with pytest.raises(RequestError) as raised:
        tool_call_grammar("{", bad, ["f"])
    assert raised.value.status == 400
