"""The official anthropic Python SDK, unmodified, against corral's /v1/messages: the scripted bigram
model where a test reads the answer, the tool-capable SmolLM2 with a forced tool_choice for the
tool round trip (tool_use, then tool_result, then the final answer)."""

from __future__ import annotations

import json
import re

import anthropic
import httpx
import pytest

from tests.clients.conftest import SCRIPTED_MODEL, THINKING_MODEL, TOOLS_MODEL
from tests.clients.toolmodel import WEATHER_TOOL, get_weather
from tests.support.bigram import AFTER_THINKING, ANSWER, THOUGHT
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.model, pytest.mark.usefixtures("release_tools_model")]

ASK = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "top_k": 1}  # this SDK has no sampling arguments; the API still takes them
WEATHER = {"name": "get_weather", "description": WEATHER_TOOL["function"]["description"],
           "input_schema": WEATHER_TOOL["function"]["parameters"]}


@pytest.fixture(scope="module")
def client(corral: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=corral.url, api_key="corral", max_retries=0)


def _raw_events(corral: ServerProcess, body: dict) -> list[tuple[str, dict]]:
    """The stream's events as sent, pings included (the SDK drops those)."""
    response = httpx.post(corral.url + "/v1/messages", json={**body, "stream": True}, timeout=60)
    assert response.headers["content-type"] == "text/event-stream"
    events = []
    for block in response.text.strip().split("\n\n"):
        name, data = block.split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def test_plain_answer(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=SCRIPTED_MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY,
                                     system=[{"type": "text", "text": "Be brief."}])
    assert re.fullmatch(r"msg_[0-9a-f]{24}", message.id)
    assert (message.type, message.role, message.model) == ("message", "assistant", SCRIPTED_MODEL)
    (block,) = message.content
    assert (block.type, block.text) == ("text", ANSWER)
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_stop_reasons(client: anthropic.Anthropic) -> None:
    cut = client.messages.create(model=SCRIPTED_MODEL, max_tokens=2, messages=ASK, extra_body=GREEDY)
    assert (cut.content[0].text, cut.stop_reason) == ("The capital", "max_tokens")
    stopped = client.messages.create(model=SCRIPTED_MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY,
                                     stop_sequences=[" Paris", "never"])
    assert stopped.content[0].text == "The capital of France is"
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", " Paris")


def test_stream_events(client: anthropic.Anthropic, corral: ServerProcess) -> None:
    body = {"model": SCRIPTED_MODEL, "max_tokens": 16, "messages": ASK}
    events = _raw_events(corral, {**body, **GREEDY})
    names = [name for name, _ in events]
    deltas = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert names == ["message_start", "ping", "content_block_start", *["content_block_delta"] * len(deltas),
                     "content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    assert "".join(deltas) == ANSWER
    start, delta = events[0][1]["message"], events[-2][1]
    assert start["usage"]["input_tokens"] > 0 and start["content"] == []
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0

    with client.messages.stream(**body, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ANSWER and final.content[0].text == ANSWER and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == events[-2][1]["usage"]["input_tokens"]  # the count replaces the estimate


def test_thinking(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=THINKING_MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY)
    thinking, text = message.content
    assert (thinking.type, thinking.thinking, text.text) == ("thinking", THOUGHT, AFTER_THINKING)
    with client.messages.stream(model=THINKING_MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert deltas == ["thinking_delta"] * 3 + ["text_delta"] * 2  # THOUGHT and AFTER_THINKING are 3 and 2 pieces
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].thinking == THOUGHT
    off = client.messages.create(model=THINKING_MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY,
                                 thinking={"type": "disabled"})
    assert [b.type for b in off.content] == ["text"] and off.content[0].text == ANSWER
    # a model that cannot think is asked to: served without thinking, as ollama does for Claude Code
    relaxed = client.messages.create(model=SCRIPTED_MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY,
                                     thinking={"type": "enabled", "budget_tokens": 1024})
    assert relaxed.content[0].text == ANSWER
    # the thinking block goes back with the answer it preceded, and the next turn is served
    history = [*ASK, {"role": "assistant", "content": [b.model_dump() for b in message.content]},
               {"role": "user", "content": "And of Italy?"}]
    follow_up = client.messages.create(model=THINKING_MODEL, max_tokens=16, messages=history, extra_body=GREEDY)
    assert follow_up.content[-1].text == AFTER_THINKING


def test_tool_round_trip(client: anthropic.Anthropic) -> None:
    """tool_choice forces a well-formed call from a 135M model; the test runs the tool and sends
    its result back as a tool_result block."""
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(model=TOOLS_MODEL, max_tokens=64, messages=asked, tools=[WEATHER],
                                   tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY)
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and re.fullmatch(r"call_[a-z0-9]{8}", call.id)
    result = get_weather(**call.input)
    history = [*asked, {"role": "assistant", "content": first.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                             "content": json.dumps(result)}]}]
    final = client.messages.create(model=TOOLS_MODEL, max_tokens=8, messages=history, tools=[WEATHER],
                                   extra_body=GREEDY)
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use")  # the answer itself is the model's own
    assert final.usage.input_tokens > first.usage.input_tokens  # the call and its result were in the prompt


def test_forced_tool_use_streamed(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=TOOLS_MODEL, max_tokens=64, messages=[{"role": "user", "content": "London?"}],
                                tools=[WEATHER], tool_choice={"type": "any"}, extra_body=GREEDY) as stream:
        deltas = [e.delta.partial_json for e in stream if e.type == "content_block_delta"
                  and e.delta.type == "input_json_delta"]
        final = stream.get_final_message()
    (call,) = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use" and json.loads("".join(deltas)) == call.input
    assert call.input["city"] in ("Paris", "London")


def test_errors_are_anthropic_errors(client: anthropic.Anthropic, corral: ServerProcess) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=8, messages=ASK)
    assert missing.value.status_code == 404
    body = missing.value.body
    assert body["type"] == "error" and re.fullmatch(r"req_[0-9a-f]{24}", body["request_id"])
    assert body["error"] == {"type": "not_found_error", "message": "model 'no-such-model' not found"}
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=8, messages=ASK, stream=True)
    with pytest.raises(anthropic.PermissionDeniedError, match="cloud is disabled"):
        client.messages.create(model=SCRIPTED_MODEL, max_tokens=8, messages=ASK,
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])

    def post(path: str, content: bytes) -> httpx.Response:
        return httpx.post(corral.url + path, content=content, headers={"Content-Type": "application/json"})

    cases = [
        (post("/v1/messages", json.dumps({"model": SCRIPTED_MODEL, "messages": ASK}).encode()), 400,
         "invalid_request_error", "max_tokens is required and must be positive"),
        (post("/v1/messages", json.dumps({"model": SCRIPTED_MODEL, "max_tokens": 8}).encode()), 400,
         "invalid_request_error", "messages is required"),
        (post("/v1/messages", json.dumps({"max_tokens": 8, "messages": ASK}).encode()), 400,
         "invalid_request_error", "model is required"),
        (post("/v1/messages", b"{"), 400, "invalid_request_error", None),
        (post("/v1/messages", b"[]"), 400, "invalid_request_error", None),
        (httpx.get(corral.url + "/v1/messages"), 405, "api_error", None),
        (post("/v1/messages/count_tokens", b"{}"), 404, "not_found_error", None),  # ollama does not serve it
    ]
    for response, status, kind, message in cases:
        assert response.status_code == status, response.text
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == kind
        assert message is None or error["error"]["message"] == message
