"""OpenAI ⇄ ollama translation, without a server: ollama's defaults and shapes, corral's additions."""

from __future__ import annotations

import base64
import struct

import pytest

from runner.http.openai_wire import (
    ChatStream,
    OpenAIError,
    chat_completion,
    chat_plan,
    completion_chunks,
    completion_plan,
    embedding_list,
    embedding_plan,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_chat_defaults_and_options() -> None:
    plan = chat_plan({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert plan.request["options"] == {"temperature": 1.0, "top_p": 1.0}
    assert (plan.stream, plan.include_usage, plan.force_tools) == (False, False, None)
    plan = chat_plan({
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}, "max_tokens": 9, "max_completion_tokens": 5, "temperature": 0,
        "top_p": 0.5, "seed": 3, "stop": "END", "frequency_penalty": 0.1, "presence_penalty": 0.2,
        "response_format": {"type": "json_object"}, "n": 1,
    })
    assert plan.request["options"] == {"num_predict": 5, "temperature": 0, "seed": 3, "frequency_penalty": 0.1,
                                       "presence_penalty": 0.2, "top_p": 0.5, "stop": ["END"]}
    assert plan.request["format"] == "json" and plan.stream and plan.include_usage
    schema = {"type": "object"}
    plan = chat_plan({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                      "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert plan.request["format"] == schema


def test_content_parts_become_messages_like_ollama() -> None:
    plan = chat_plan({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": f"data:;base64,{PNG}"},
    ]}]})
    assert plan.request["messages"] == [
        {"role": "user", "content": "What is this?"},
        {"role": "user", "content": "", "images": [PNG]},
        {"role": "user", "content": "", "images": [PNG]},
    ]


def test_tool_messages() -> None:
    plan = chat_plan({"model": "m", "tools": [TOOL], "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
    ]})
    assert plan.request["messages"][1:] == [
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}, "id": "call_1"}]},
        {"role": "tool", "content": "cold", "tool_name": "get_weather", "tool_call_id": "call_1"},
    ]
    assert plan.request["tools"] == [TOOL]


@pytest.mark.parametrize(("choice", "forced", "keeps_tools"), [
    (None, None, True), ("auto", None, True), ("none", None, False), ("required", ["get_weather"], True),
    ({"type": "function", "function": {"name": "get_weather"}}, ["get_weather"], True),
])
def test_tool_choice(choice: object, forced: list[str] | None, keeps_tools: bool) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": choice}
    plan = chat_plan(body)
    assert plan.force_tools == forced
    assert ("tools" in plan.request) == keeps_tools


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": []},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [TOOL],
     "tool_choice": {"type": "function", "function": {"name": "other"}}},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1.5},
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/y.png"}]}]},
])
def test_chat_rejections(body: dict) -> None:
    with pytest.raises(OpenAIError) as raised:
        chat_plan(body)
    assert raised.value.status == 400
    assert raised.value.body()["error"]["type"] == "invalid_request_error"


def test_chat_completion_shape() -> None:
    result = {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_abcdefgh", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}]},
        "done": True, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 4}
    answer = chat_completion("chatcmpl-1", result)
    assert list(answer) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    assert answer["choices"] == [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "", "tool_calls": [
            {"id": "call_abcdefgh", "index": 0, "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ]}}]
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_chat_stream_splits_thinking_and_skips_empty_trailer() -> None:
    stream = ChatStream("chatcmpl-2", "m", include_usage=False)
    first = stream.feed({"message": {"role": "assistant", "content": "Hi", "thinking": "hmm"}, "done": False})
    assert [c["choices"][0]["delta"] for c in first] == [{"role": "assistant", "reasoning": "hmm"}, {"content": "Hi"}]
    last = stream.feed({"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "length",
                        "prompt_eval_count": 1, "eval_count": 2})
    assert [c["choices"] for c in last] == [[{"index": 0, "delta": {}, "finish_reason": "length"}]]


def test_completions() -> None:
    plan = completion_plan({"model": "m", "prompt": ["once"], "stop": ["a", "b"], "stream": True,
                            "stream_options": {"include_usage": True}})
    assert plan.request["prompt"] == "once"
    assert plan.request["options"]["stop"] == ["a", "b"]
    assert plan.request["options"]["frequency_penalty"] == 0.0
    chunks = completion_chunks("cmpl-1", {"model": "m", "response": "", "done": True, "done_reason": "stop",
                                          "prompt_eval_count": 2, "eval_count": 5}, include_usage=True)
    assert chunks[0]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert chunks[1]["choices"] == [] and chunks[1]["usage"]["total_tokens"] == 7
    with pytest.raises(OpenAIError):
        completion_plan({"model": "m", "prompt": "x", "stop": ["a", 1]})


def test_embeddings_base64_is_little_endian_float32() -> None:
    plan = embedding_plan({"model": "m", "input": "hi", "encoding_format": "BASE64", "dimensions": 2})
    assert plan.request == {"model": "m", "input": ["hi"], "dimensions": 2} and plan.base64
    answer = embedding_list("m", {"embeddings": [[0.5, -1.0]], "prompt_eval_count": 1}, as_base64=True)
    assert struct.unpack("<2f", base64.b64decode(answer["data"][0]["embedding"])) == (0.5, -1.0)
    assert answer["usage"] == {"prompt_tokens": 1, "total_tokens": 1}
