"""Tools, thinking, Jinja fallback, legacy templates and model defaults, end to end.

SmolLM2-135M does not call tools on its own, so the tool tests constrain its output with a JSON
schema `format` to the call shape; tool-call parsing then runs on real model output, streamed.
Whether a model closes its thinking is up to the model, so the thinking tests use the scripted
bigram model, which thinks THOUGHT, writes `</think>` and answers AFTER_THINKING on every CPU.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import ollama
import pytest

from runner.scheduler import RunnerConfig
from tests.support.bigram import AFTER_THINKING, ANSWER, THINKING_TEMPLATE, THOUGHT
from tests.support.runner import StartRunner, bigram_spec, smollm2_spec

pytestmark = pytest.mark.model

TOOLS_TEMPLATE = """{{- if .Tools }}<|im_start|>system
Tools: {{ json .Tools }}<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{- if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}
{{- else }}
{{ .Content }}
{{- end }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

LEGACY_TEMPLATE = "{{ if .System }}SYS {{ .System }}\n{{ end }}USER {{ .Prompt }}\nBOT {{ .Response }}\n"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
    "required": ["name", "arguments"],
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


async def _debug_render(url: str, path: str, body: dict) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, json={**body, "_debug_render_only": True}) as response,
    ):
        assert response.status == 200, await response.text()
        return (await response.json())["_debug_info"]["rendered_template"]


async def test_tool_calls_are_parsed_from_output_streamed_and_not(start_runner: StartRunner) -> None:
    harness = await start_runner(specs=[smollm2_spec(template=TOOLS_TEMPLATE)])
    client = harness.client()
    options = {"temperature": 0, "num_predict": 40}
    whole = await client.chat(model="smollm2", messages=ASK, tools=[WEATHER_TOOL], format=CALL_SCHEMA, options=options)
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments["city"], str)
    assert whole.message.content == ""
    chunks = [
        chunk
        async for chunk in await client.chat(
            model="smollm2", messages=ASK, tools=[WEATHER_TOOL], format=CALL_SCHEMA, options=options, stream=True
        )
    ]
    calls = [call for chunk in chunks for call in chunk.message.tool_calls or []]
    assert [c.function.model_dump() for c in calls] == [call.function.model_dump()]
    assert chunks[-1].done and not chunks[-1].message.tool_calls


async def test_tool_call_ids_and_round_trip_rendering(start_runner: StartRunner) -> None:
    harness = await start_runner(specs=[smollm2_spec(template=TOOLS_TEMPLATE)])
    async with aiohttp.ClientSession() as session:
        body = {
            "model": "smollm2",
            "messages": ASK,
            "tools": [WEATHER_TOOL],
            "format": CALL_SCHEMA,
            "stream": False,
            "options": {"temperature": 0, "num_predict": 40},
        }
        async with session.post(harness.url + "/api/chat", json=body) as response:
            message = (await response.json())["message"]
    (call,) = message["tool_calls"]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert call["function"]["index"] == 0
    history = [*ASK, message, {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    body = {"model": "smollm2", "messages": history, "tools": [WEATHER_TOOL]}
    rendered = await _debug_render(harness.url, "/api/chat", body)
    arguments = json.dumps(call["function"]["arguments"], separators=(",", ":"))
    assert f'{{"name": "get_weather", "arguments": {arguments}}}' in rendered
    assert "<|im_start|>tool\nsunny<|im_end|>" in rendered
    assert rendered.startswith('<|im_start|>system\nTools: [{"type":"function","function":{"name":"get_weather"')


async def test_thinking_is_split_from_content(start_runner: StartRunner, tmp_path: Path) -> None:
    harness = await start_runner(specs=[bigram_spec(tmp_path, template=THINKING_TEMPLATE)])
    client = harness.client()
    options = {"temperature": 0, "num_predict": 16}
    thought = await client.chat(model="bigram", messages=ASK, options=options)
    assert (thought.message.thinking, thought.message.content) == (THOUGHT, AFTER_THINKING)
    streamed = [c async for c in await client.generate(model="bigram", prompt="Hi", options=options, stream=True)]
    assert "".join(c.thinking or "" for c in streamed) == THOUGHT
    assert "".join(c.response for c in streamed) == AFTER_THINKING
    assert not any(c.thinking and c.response for c in streamed)
    cut = await client.chat(model="bigram", messages=ASK, options={**options, "num_predict": 2})
    assert (cut.message.thinking, cut.message.content, cut.done_reason) == ("Let me", "", "length")
    plain = await client.chat(model="bigram", messages=ASK, options=options, think=False)
    assert (plain.message.content, plain.message.thinking) == (ANSWER, None)
    rendered = await _debug_render(
        harness.url,
        "/api/chat",
        {"model": "bigram", "messages": [*ASK, {"role": "assistant", "content": "Sunny", "thinking": "hmm"}, *ASK]},
    )
    assert "<|im_start|>assistant\n<think>hmm</think>Sunny<|im_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n<think>")


async def test_models_without_a_go_template_use_the_gguf_jinja_template(start_runner: StartRunner) -> None:
    harness = await start_runner(specs=[smollm2_spec(template=None)])
    rendered = await _debug_render(harness.url, "/api/chat", {"model": "smollm2", "messages": ASK})
    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )
    result = await harness.client().chat(model="smollm2", messages=ASK, options={"temperature": 0, "num_predict": 6})
    assert result.done and result.done_reason in ("stop", "length") and result.eval_count > 0


async def test_legacy_prompt_response_template(start_runner: StartRunner) -> None:
    harness = await start_runner(specs=[smollm2_spec(template=LEGACY_TEMPLATE)])
    history = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    rendered = await _debug_render(harness.url, "/api/chat", {"model": "smollm2", "messages": history})
    assert rendered == "SYS be nice\nUSER hi\nBOT hello\nUSER bye\nBOT "


async def test_model_system_prompt_and_preset_messages(start_runner: StartRunner) -> None:
    spec = smollm2_spec(
        system="You are terse.",
        messages=({"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}),
    )
    harness = await start_runner(RunnerConfig(), [spec])
    rendered = await _debug_render(harness.url, "/api/chat", {"model": "smollm2", "messages": ASK})
    assert rendered.startswith(
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nping<|im_end|>\n"
        "<|im_start|>assistant\npong<|im_end|>\n<|im_start|>user\nWhat is the weather"
    )
    own_system = [{"role": "system", "content": "Mine."}, *ASK]
    rendered = await _debug_render(harness.url, "/api/chat", {"model": "smollm2", "messages": own_system})
    assert "You are terse." not in rendered and "Mine." in rendered
    generated = await _debug_render(harness.url, "/api/generate", {"model": "smollm2", "prompt": "q"})
    assert generated.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nping")


async def test_think_on_a_thinking_model_can_be_a_level(start_runner: StartRunner, tmp_path: Path) -> None:
    harness = await start_runner(specs=[bigram_spec(tmp_path, template=THINKING_TEMPLATE)])
    result = await harness.client().chat(
        model="bigram", messages=ASK, think="high", options={"temperature": 0, "num_predict": 4}
    )
    assert result.message.thinking == THOUGHT
    with pytest.raises(ollama.ResponseError) as exc:
        await harness.client().chat(model="bigram", messages=ASK, tools=[WEATHER_TOOL])
    assert exc.value.status_code == 400 and "does not support tools" in exc.value.error


async def test_format_on_a_thinking_model_applies_after_the_thinking(start_runner: StartRunner, tmp_path: Path) -> None:
    """ollama's two passes: think freely, then render that thinking as the assistant's and generate
    the content under the format's grammar (the scripted model closes its thinking by itself)."""
    harness = await start_runner(specs=[bigram_spec(tmp_path, template=THINKING_TEMPLATE)])
    client = harness.client()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    options = {"temperature": 0, "num_predict": 200}
    chunks = [c async for c in await client.chat(model="bigram", messages=ASK, format=schema, options=options,
                                                 stream=True)]
    thinking = "".join(c.message.thinking or "" for c in chunks)
    content = "".join(c.message.content for c in chunks)
    assert thinking == THOUGHT
    assert isinstance(json.loads(content)["a"], int)  # the grammar overrides the scripted answer
    assert chunks[-1].done and chunks[-1].eval_count > 0
    first_content = next(i for i, c in enumerate(chunks) if c.message.content)
    assert all(not c.message.thinking for c in chunks[first_content:])

    # without thinking there is one pass, constrained from the first token
    plain = await client.chat(model="bigram", messages=ASK, format=schema, options=options, think=False)
    assert isinstance(json.loads(plain.message.content)["a"], int) and not plain.message.thinking
