"""Anthropic Messages ⇄ ollama translation, without a server: ollama's block handling, checks and
defaults, and the stream's events for answers the scripted model cannot give."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from runner.errors import RequestError
from runner.http.anthropic_wire import MessagesStream, error_body, messages_plan, to_message

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
ASK = [{"role": "user", "content": "hi"}]
TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}
CALL = {"id": "call_abc", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}


def _plan(**body: Any):
    return messages_plan({"model": "m", "max_tokens": 32, "messages": ASK, **body})


def _error(**body: Any) -> RequestError:
    with pytest.raises(RequestError) as exc:
        messages_plan(body)
    return exc.value


def test_options_only_when_given() -> None:
    assert _plan().request == {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                               "options": {"num_predict": 32}, "stream": False}
    plan = _plan(temperature=0.5, top_p=0.9, top_k=5, stop_sequences=["END"], stream=True)
    assert plan.request["options"] == {"num_predict": 32, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
                                       "stop": ["END"]}
    assert plan.stream and plan.stop_sequences == ("END",)


def test_system_and_blocks_become_ollama_messages() -> None:
    plan = _plan(system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}], messages=[
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": PNG}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": ""},
                                          {"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "call_abc", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_abc",
                                      "content": [{"type": "text", "text": "sunny"}]},
                                     {"type": "text", "text": "Thanks."}]},
    ])
    assert plan.request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?", "images": [PNG]},
        {"role": "assistant", "content": "Checking.", "thinking": "hmm", "tool_calls": [
            {"id": "call_abc", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_abc", "tool_name": "get_weather"},
        {"role": "user", "content": "Thanks."},  # a user turn's results come before its text
    ]
    assert plan.estimated_input_tokens > 1


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"max_tokens": 8, "messages": ASK}, 400, "model is required"),
    ({"model": "m", "messages": ASK}, 400, "max_tokens is required and must be positive"),
    ({"model": "m", "max_tokens": 0, "messages": ASK}, 400, "max_tokens is required and must be positive"),
    ({"model": "m", "max_tokens": 8}, 400, "messages is required"),
    ({"model": "m", "max_tokens": "8", "messages": ASK}, 400,
     "json: cannot unmarshal string into Go struct field MessagesRequest.max_tokens of type int"),
    ({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": 5}]}, 400, None),
    ({"model": "m", "max_tokens": 8, "messages": [{"role": "assistant", "content": [{"type": "tool_use"}]}]}, 400,
     "tool_use block missing required 'id' field"),
    ({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}, 400,
     "invalid image source type: url. Only base64 images are supported."),
    ({"model": "m", "max_tokens": 8, "messages": ASK, "tools": [{"type": "web_search_20250305", "name": "ws"}]},
     403, "ollama cloud is disabled: web search is unavailable"),
    ({"model": "m", "max_tokens": 8, "messages": ASK, "tools": [TOOL], "tool_choice": {"type": "tool",
                                                                                         "name": "nope"}}, 400, None),
])
def test_refusals(body: dict, status: int, message: str | None) -> None:
    error = _error(**body)
    assert error.status == status
    assert message is None or error.message == message


def test_thinking_and_tool_choice() -> None:
    assert _plan(thinking={"type": "enabled", "budget_tokens": 1024}).request["think"] is True
    assert _plan(thinking={"type": "disabled"}).request["think"] is False
    assert _plan(output_config={"effort": " XHigh "}).request["think"] == "high"
    assert "think" not in _plan(thinking={"type": "adaptive"}).request
    assert _plan(tools=[TOOL], tool_choice={"type": "any"}).force_tools == ["get_weather"]
    assert _plan(tools=[TOOL], tool_choice={"type": "tool", "name": "get_weather"}).force_tools == ["get_weather"]
    assert "tools" not in _plan(tools=[TOOL], tool_choice={"type": "none"}).request
    assert _plan(tools=[TOOL]).request["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                          "parameters": {"type": "object"}}}]


def test_stop_reasons() -> None:
    plan = _plan(stop_sequences=["END"])
    final = {"message": {"content": "x"}, "done": True, "prompt_eval_count": 4, "eval_count": 2}
    assert to_message(plan, "msg_1", {**final, "done_reason": "stop"})["stop_reason"] == "end_turn"
    assert to_message(plan, "msg_1", {**final, "done_reason": "length"})["stop_reason"] == "max_tokens"
    stopped = to_message(plan, "msg_1", {**final, "done_reason": "stop", "stop_sequence": "END"})
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "END")
    # the model's own stop strings end a turn; only the request's are stop sequences
    own = to_message(plan, "msg_1", {**final, "done_reason": "stop", "stop_sequence": "<|im_end|>"})
    assert (own["stop_reason"], own["stop_sequence"]) == ("end_turn", None)
    calling = {**final, "done_reason": "stop", "message": {"content": "", "tool_calls": [CALL]}}
    called = to_message(plan, "msg_1", calling)
    assert called["stop_reason"] == "tool_use"
    assert called["content"] == [{"type": "tool_use", "id": "call_abc", "name": "get_weather",
                                  "input": {"city": "Paris"}}]
    assert called["usage"] == {"input_tokens": 4, "output_tokens": 2}


def test_stream_blocks_in_order() -> None:
    stream = MessagesStream(_plan(tools=[TOOL]), "msg_1")
    events = [*stream.feed({"message": {"content": "Let me check."}}),
              *stream.feed({"message": {"content": "", "tool_calls": [CALL]}}),
              *stream.feed({"message": {"content": ""}, "done": True, "done_reason": "stop",
                            "prompt_eval_count": 5, "eval_count": 3})]
    assert [(kind, data.get("index")) for kind, data in events] == [
        ("message_start", None), ("ping", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("message_delta", None), ("message_stop", None),
    ]
    assert events[5][1]["content_block"] == {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {}}
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":"Paris"}'}
    assert events[8][1]["delta"]["stop_reason"] == "tool_use"
    assert events[8][1]["usage"] == {"input_tokens": 5, "output_tokens": 3}


def test_errors_follow_the_status() -> None:
    stream = MessagesStream(_plan(), "msg_1")
    (start, _ping, (kind, data)) = stream.fail(500, "llama runner process has terminated")
    assert start[0] == "message_start"
    assert (kind, data) == ("error", {"type": "error", "error": {"type": "api_error",
                                                                "message": "llama runner process has terminated"}})
    kinds = {status: error_body(status, "x")["error"]["type"] for status in (400, 401, 403, 404, 429, 503, 500)}
    assert kinds == {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error", 500: "api_error"}
