"""The official openai Python SDK's Responses API (`client.responses`), unmodified, against corral's
/v1/responses: the scripted bigram model where a test reads the answer, the tool-capable SmolLM2
with a forced tool_choice for the tool round trip."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from tests.clients.conftest import SCRIPTED_MODEL, THINKING_MODEL, TOOLS_MODEL
from tests.clients.toolmodel import WEATHER_TOOL, get_weather
from tests.support.bigram import AFTER_THINKING, ANSWER, THOUGHT
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.model, pytest.mark.usefixtures("release_tools_model")]

ASK = "What is the capital of France?"
WEATHER = {"type": "function", **WEATHER_TOOL["function"]}  # the Responses API's flat function tool
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done",
            "response.completed"]


@pytest.fixture(scope="module")
def client(corral: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=corral.url + "/v1", api_key="corral", max_retries=0)


def test_plain_answer(client: openai.OpenAI) -> None:
    response = client.responses.create(model=SCRIPTED_MODEL, input=ASK, instructions="Be brief.",
                                       max_output_tokens=16, temperature=0)
    assert re.fullmatch(r"resp_\d+", response.id)
    assert (response.object, response.status, response.model) == ("response", "completed", SCRIPTED_MODEL)
    assert response.output_text == ANSWER
    (message,) = response.output
    assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
    assert re.fullmatch(r"msg_\d+", message.id)
    assert (response.instructions, response.temperature, response.max_output_tokens) == ("Be brief.", 0, 16)
    assert (response.tool_choice, response.store, response.previous_response_id) == ("auto", False, None)
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_max_output_tokens_cuts_the_answer(client: openai.OpenAI) -> None:
    response = client.responses.create(model=SCRIPTED_MODEL, input=ASK, max_output_tokens=2, temperature=0)
    assert response.output_text == "The capital"
    assert response.status == "completed"  # as ollama answers: no "incomplete" status


def test_stream_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=SCRIPTED_MODEL, input=ASK, max_output_tokens=16, temperature=0,
                                          stream=True))
    kinds = [event.type for event in events]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert kinds == [*TEXT_EVENTS, *["response.output_text.delta"] * len(deltas), *TEXT_END]
    assert "".join(deltas) == ANSWER
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert len({event.response.id for event in events if hasattr(event, "response")}) == 1
    completed = events[-1].response
    assert completed.status == "completed" and completed.output_text == ANSWER
    assert completed.usage.output_tokens > 0 and completed.completed_at is not None


def test_stream_helper_accumulates(client: openai.OpenAI) -> None:
    with client.responses.stream(model=SCRIPTED_MODEL, input=ASK, max_output_tokens=16, temperature=0) as stream:
        snapshots = [event.snapshot for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert snapshots[-1] == ANSWER and final.output_text == ANSWER


def test_reasoning_item(client: openai.OpenAI) -> None:
    response = client.responses.create(model=THINKING_MODEL, input=ASK, max_output_tokens=16, temperature=0)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == THOUGHT
    assert message.type == "message"
    assert response.output_text == AFTER_THINKING
    events = list(client.responses.create(model=THINKING_MODEL, input=ASK, max_output_tokens=16, temperature=0,
                                          stream=True))
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert thought == THOUGHT
    assert [item.type for item in events[-1].response.output] == ["reasoning", "message"]
    assert events[-1].response.output_text == AFTER_THINKING
    plain = client.responses.create(model=THINKING_MODEL, input=ASK, max_output_tokens=16, temperature=0,
                                    reasoning={"effort": "none"})
    assert [item.type for item in plain.output] == ["message"] and plain.output_text == ANSWER
    assert plain.reasoning.effort == "none"
    # the reasoning item goes back as input, with the answer it preceded, and the next turn is served
    history = [{"role": "user", "content": ASK}, *[item.model_dump(exclude_none=True) for item in response.output],
               {"role": "user", "content": "And of Italy?"}]
    follow_up = client.responses.create(model=THINKING_MODEL, input=history, max_output_tokens=16, temperature=0)
    assert follow_up.output_text == AFTER_THINKING
    assert follow_up.usage.input_tokens > response.usage.input_tokens


def test_tool_round_trip(client: openai.OpenAI) -> None:
    """tool_choice forces a well-formed call from a 135M model; the test runs the tool and sends
    the call and its output back as input items."""
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model=TOOLS_MODEL, input=asked, tools=[WEATHER], temperature=0,
                                    tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=64)
    (call,) = first.output
    assert (call.type, call.name, call.status) == ("function_call", "get_weather", "completed")
    assert re.fullmatch(r"call_[a-z0-9]{8}", call.call_id)
    result = get_weather(**json.loads(call.arguments))
    assert first.tool_choice.name == "get_weather" and first.tools[0].name == "get_weather"
    history = [*asked, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(result)}]
    second = client.responses.create(model=TOOLS_MODEL, input=history, tools=[WEATHER], max_output_tokens=8,
                                     temperature=0)
    assert second.status == "completed" and second.output  # the answer itself is the model's own
    assert {item.type for item in second.output} <= {"message", "function_call"}
    assert second.usage.input_tokens > first.usage.input_tokens  # the call and its result were in the prompt


def test_required_tool_call_streamed(client: openai.OpenAI) -> None:
    with client.responses.stream(model=TOOLS_MODEL, input="Weather in London?", tools=[WEATHER],
                                 tool_choice="required", max_output_tokens=64, temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[-5:] == ["response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert json.loads(call.arguments)["city"] in ("Paris", "London")


def test_errors_are_openai_errors(client: openai.OpenAI, corral: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input=ASK)
    assert missing.value.status_code == 404
    assert missing.value.body == {"message": "model 'no-such-model' not found", "type": "not_found_error",
                                  "param": None, "code": None}
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input=ASK, stream=True)
    with pytest.raises(openai.BadRequestError, match="unknown input item type"):
        client.responses.create(model=SCRIPTED_MODEL, input=[{"type": "telepathy"}])
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.responses.create(model=TOOLS_MODEL, input=ASK, tools=[WEATHER],
                                tool_choice={"type": "function", "name": "nope"})
    with pytest.raises(openai.PermissionDeniedError, match="cloud is disabled"):
        client.responses.create(model=SCRIPTED_MODEL, input=ASK, tools=[{"type": "web_search"}])
    bad = httpx.post(corral.url + "/v1/responses", content=b"{", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
