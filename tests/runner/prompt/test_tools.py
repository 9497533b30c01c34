"""Tool-call and thinking extraction from streamed model output.

The outputs below are what Qwen 2.5 (Hermes-style tags), Mistral and Llama 3.1 write when they
call tools; each is fed whole, in odd-sized chunks and character by character, since token
boundaries can fall anywhere.
"""

from __future__ import annotations

import re

import pytest

from runner.prompt.thinking import ThinkingParser, infer_thinking_tags
from runner.prompt.tools import ToolCallParser, infer_tool_tag, new_tool_call_id
from runner.template.chat import ToolCall
from runner.template.template import Template


def _tool(name: str) -> dict[str, object]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


TOOLS = [_tool("get_weather"), _tool("get_time")]
CHUNK_SIZES = [1000, 7, 3, 1]


def feed(parser: ToolCallParser, text: str, size: int) -> tuple[str, list[ToolCall]]:
    """Streams text through the parser in chunks of `size`; returns all content and calls."""
    content, calls = "", []
    for start in range(0, len(text), size):
        piece, found = parser.add(text[start : start + size])
        content += piece
        calls += found
    piece, found = parser.finish()
    return content + piece, calls + found


def summary(calls: list[ToolCall]) -> list[tuple[int, str, dict[str, object]]]:
    return [(c.index, c.name, c.arguments) for c in calls]


# --- tag inference ----------------------------------------------------------------------------

HERMES_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .Content }}{{ .Content }}{{ else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

MISTRAL_TEMPLATE = """{{- range $i, $m := .Messages }}
{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}</s>
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}]</s>
{{- end }}
{{- end }}
{{- end }}"""

LLAMA_TEMPLATE = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ if .ToolCalls }}
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}{{ .Content }}{{ end }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""


@pytest.mark.parametrize(
    ("source", "tag"),
    [
        (HERMES_TEMPLATE, "<tool_call>"),
        (MISTRAL_TEMPLATE, "[TOOL_CALLS] ["),
        (LLAMA_TEMPLATE, "{"),
        ("{{ range .Messages }}{{ .Content }}{{ end }}", None),
        ("{{ range .Messages }}{{ .ToolCalls }}{{ end }}", "{"),
        ("{{ if .ToolCalls }}{{ end }}", "{"),
        ("{{ if .ToolCalls }}```json\n{{ end }}", "```json"),
        ("{{ if .ToolCalls }}\r\n [ {{ range .ToolCalls }}{{ . }}{{ end }}]{{ end }}", "["),
        ("{{ if .ToolCalls }}{{ range .ToolCalls }}{{ . }}{{ end }}]{{ end }}", "{"),
        ("{{ if .ToolCalls }}First{{ if .X }}inner{{ end }}Second{{ end }}", "First"),
        ('{{ if eq .Role "tool" }}x{{ else }}{{ if and .ToolCalls true }}[CALL]{{ end }}{{ end }}', "[CALL]"),
    ],
)
def test_infer_tool_tag(source: str, tag: str | None) -> None:
    assert infer_tool_tag(Template.parse(source)) == tag


def test_new_tool_call_id_format() -> None:
    ids = {new_tool_call_id() for _ in range(50)}
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", i) for i in ids)
    assert len(ids) == 50


# --- Hermes / Qwen: <tool_call>{...}</tool_call> ---------------------------------------------

HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_hermes_single_call(size: int) -> None:
    content, calls = feed(ToolCallParser("<tool_call>", TOOLS), HERMES_CALL, size)
    assert content == ""
    assert summary(calls) == [(0, "get_weather", {"city": "Paris", "unit": "celsius"})]
    assert calls[0].id == ""


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_hermes_text_before_and_two_calls(size: int) -> None:
    output = (
        "Let me look that up.\n"
        + HERMES_CALL
        + '\n<tool_call>\n{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}\n</tool_call>'
    )
    content, calls = feed(ToolCallParser("<tool_call>", TOOLS), output, size)
    assert content == "Let me look that up.\n"
    assert summary(calls) == [
        (0, "get_weather", {"city": "Paris", "unit": "celsius"}),
        (1, "get_time", {"timezone": "Europe/Paris"}),
    ]


def test_hermes_text_before_is_emitted_before_the_call_completes() -> None:
    parser = ToolCallParser("<tool_call>", TOOLS)
    assert parser.add("Sure. <tool") == ("Sure. ", [])
    assert parser.add('_call>{"name": "get_time", "arguments": {}') == ("", [])
    content, calls = parser.add("}</tool_call>")
    assert content == ""
    assert summary(calls) == [(0, "get_time", {})]


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_hermes_arguments_as_json_string(size: int) -> None:
    output = '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>'
    _, calls = feed(ToolCallParser("<tool_call>", TOOLS), output, size)
    assert summary(calls) == [(0, "get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_plain_answer_passes_through_unchanged(size: int) -> None:
    output = "It is 18°C in Paris <sunny>, with a {light} breeze. 1 < 2 and <tool"
    content, calls = feed(ToolCallParser("<tool_call>", TOOLS), output, size)
    assert content == output
    assert calls == []


def test_partial_tag_is_held_back_until_it_resolves() -> None:
    parser = ToolCallParser("<tool_call>", TOOLS)
    assert parser.add("a <to") == ("a ", [])
    assert parser.add("p> b") == ("<top> b", [])


def test_longer_tool_name_wins_over_its_prefix() -> None:
    tools = [_tool("get"), _tool("get_weather")]
    output = '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    _, calls = feed(ToolCallParser("<tool_call>", tools), output, 1)
    assert summary(calls) == [(0, "get_weather", {"city": "Rome"})]


def test_text_after_the_tag_is_not_content() -> None:
    """As in ollama, once the tag is seen only tool calls come out of the rest."""
    output = HERMES_CALL + "\nI have called the tool."
    content, calls = feed(ToolCallParser("<tool_call>", TOOLS), output, 5)
    assert content == ""
    assert [c.name for c in calls] == ["get_weather"]


# --- Mistral: [TOOL_CALLS] [{...}, {...}] -----------------------------------------------------

MISTRAL_CALLS = (
    '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
    '{"name": "get_time", "arguments": {"timezone": "CET"}}]'
)


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_mistral_calls(size: int) -> None:
    content, calls = feed(ToolCallParser("[TOOL_CALLS] [", TOOLS), MISTRAL_CALLS, size)
    assert content == ""
    assert summary(calls) == [(0, "get_weather", {"city": "Paris"}), (1, "get_time", {"timezone": "CET"})]


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_mistral_tag_without_space(size: int) -> None:
    output = '[TOOL_CALLS][{"name": "get_time", "arguments": {"timezone": "UTC"}}]'
    content, calls = feed(ToolCallParser("[TOOL_CALLS]", TOOLS), output, size)
    assert content == ""
    assert summary(calls) == [(0, "get_time", {"timezone": "UTC"})]


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_mistral_plain_answer(size: int) -> None:
    output = "The [weather] in Paris is [mild] today."
    assert feed(ToolCallParser("[TOOL_CALLS] [", TOOLS), output, size) == (output, [])


# --- Llama 3.1: bare JSON with "parameters" ---------------------------------------------------

LLAMA_CALL = '{"name": "get_weather", "parameters": {"city": "San Francisco, CA", "unit": "fahrenheit"}}'


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_llama_bare_json_call(size: int) -> None:
    content, calls = feed(ToolCallParser("{", TOOLS), LLAMA_CALL, size)
    assert content == ""
    assert summary(calls) == [(0, "get_weather", {"city": "San Francisco, CA", "unit": "fahrenheit"})]


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_llama_call_after_blank_lines(size: int) -> None:
    content, calls = feed(ToolCallParser("{", TOOLS), "\n\n" + LLAMA_CALL, size)
    assert content.strip() == ""
    assert [c.name for c in calls] == ["get_weather"]


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_llama_tool_name_as_key(size: int) -> None:
    _, calls = feed(ToolCallParser("{", TOOLS), '{"get_time": {"timezone": "Asia/Tokyo"}}', size)
    assert summary(calls) == [(0, "get_time", {"timezone": "Asia/Tokyo"})]


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize(
    "output",
    [
        'Sure! Here is some JSON: {"name": "get_weather", "parameters": {}}',
        '{"answer": 42, "note": "not a call"} and more',
        "No tools needed; the answer is 4.",
    ],
)
def test_llama_content_passes_through(output: str, size: int) -> None:
    assert feed(ToolCallParser("{", TOOLS), output, size) == (output, [])


def test_parser_without_matching_tools_keeps_json_content() -> None:
    parser = ToolCallParser("{", [])
    assert feed(parser, LLAMA_CALL, 4) == (LLAMA_CALL, [])


# --- thinking ---------------------------------------------------------------------------------

THINKING_TEMPLATE = """{{- range $i, $_ := .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


@pytest.mark.parametrize(
    ("source", "tags"),
    [
        (THINKING_TEMPLATE, ("<think>", "</think>")),
        ("{{ range .Messages }}{{ .Content }}{{ end }}", None),
        ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", None),
        (
            "{{ range .Messages }}{{ if .Thinking }}◁think▷{{ .Thinking }}◁/think▷{{ end }}{{ end }}",
            ("◁think▷", "◁/think▷"),
        ),
    ],
)
def test_infer_thinking_tags(source: str, tags: tuple[str, str] | None) -> None:
    assert infer_thinking_tags(Template.parse(source)) == tags


def think(text: str, size: int, parser: ThinkingParser | None = None) -> tuple[str, str]:
    parser = parser or ThinkingParser()
    thinking, content = "", ""
    for start in range(0, len(text), size):
        t, c = parser.add(text[start : start + size])
        thinking, content = thinking + t, content + c
    t, c = parser.finish()
    return thinking + t, content + c


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_thinking_is_split_from_content(size: int) -> None:
    output = "<think>\nThe user wants a greeting.\n</think>\n\nHello there!"
    assert think(output, size) == ("The user wants a greeting.\n", "Hello there!")


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_output_without_thinking_is_all_content(size: int) -> None:
    assert think("  Hello <b>there</b>", size) == ("", "  Hello <b>there</b>")


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_unfinished_thinking_is_flushed_as_thinking(size: int) -> None:
    assert think("<think>still going </th", size) == ("still going </th", "")


def test_opening_tag_from_the_prompt() -> None:
    parser = ThinkingParser()
    assert parser.add("<think>") == ("", "")  # the prompt already ends with the tag
    assert think("plan</think>done", 2, parser) == ("plan", "done")
