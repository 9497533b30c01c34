"""The official openai Python SDK, unmodified, against corral's /v1 API on SmolLM2 (and on the
scripted bigram model where a test reads the answer)."""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Literal

import openai
import pytest
from pydantic import BaseModel

from tests.clients.conftest import MODEL, SCRIPTED_MODEL, TOOLS_MODEL
from tests.clients.toolmodel import WEATHER_TOOL, get_weather
from tests.support.bigram import ANSWER
from tests.support.server import ServerProcess

pytestmark = pytest.mark.model

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def client(corral: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=corral.url + "/v1", api_key="corral", max_retries=0)


@pytest.fixture(scope="module")
def async_client(corral: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=corral.url + "/v1", api_key="corral", max_retries=0)


def test_chat_plain(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=SCRIPTED_MODEL, messages=HELLO, max_tokens=8, temperature=0,
                                                seed=7)
    assert re.fullmatch(r"chatcmpl-\d{1,3}", completion.id)
    assert completion.object == "chat.completion"
    assert completion.system_fingerprint == "fp_ollama"
    assert completion.model == SCRIPTED_MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ANSWER
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_stream_matches_plain(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "messages": HELLO, "max_completion_tokens": 8, "temperature": 0}
    plain = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-2])
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == plain.choices[0].finish_reason
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == plain.usage.completion_tokens


async def test_async_chat_stream(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=4, temperature=0, stream=True
    )
    reasons = [chunk.choices[0].finish_reason async for chunk in stream if chunk.choices]
    assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])


def test_text_and_image_parts(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]
    rendered = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": parts}], extra_body={"_debug_render_only": True}
    ).model_extra["_debug_info"]["rendered_template"]
    assert rendered == "<|im_start|>user\nSay\n\nhello.<|im_end|>\n<|im_start|>assistant\n"
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
    with pytest.raises(openai.BadRequestError) as raised:  # accepted by the API, refused by a text-only model
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [parts[0], image]}])
    assert "does not support vision" in raised.value.message


def test_json_schema_with_parse_helper(client: openai.OpenAI) -> None:
    class Verdict(BaseModel):
        answer: Literal["yes", "no"]

    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Is Paris in France? Reply in JSON."}],
        response_format=Verdict,
        max_tokens=16,
        temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Verdict) and parsed.answer in ("yes", "no")


def test_json_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object."}],
        response_format={"type": "json_object"},
        max_tokens=12,
        temperature=0,
    )
    assert completion.choices[0].message.content.lstrip().startswith("{")


def test_stop_sequence(client: openai.OpenAI) -> None:
    stopped = client.chat.completions.create(model=SCRIPTED_MODEL, messages=HELLO, max_tokens=16, temperature=0,
                                             stop=[" Paris", "never"])
    assert stopped.choices[0].message.content == ANSWER[: ANSWER.index(" Paris")]
    assert stopped.choices[0].finish_reason == "stop"
    cut = client.chat.completions.create(model=SCRIPTED_MODEL, messages=HELLO, max_tokens=2, temperature=0)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("The capital", "length")


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    """tool_choice forces a well-formed call even from a 135M model; the test runs the tool and
    feeds the result back, and the model's next turn sees it."""
    messages: list[dict] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=TOOLS_MODEL,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48,
        temperature=0,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert re.fullmatch(r"call_[a-z0-9]{8}", call.id)
    assert call.type == "function" and call.function.name == "get_weather"
    result = get_weather(**json.loads(call.function.arguments))

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    rendered = client.chat.completions.create(
        model=TOOLS_MODEL, messages=messages, tools=[WEATHER_TOOL], extra_body={"_debug_render_only": True}
    ).model_extra["_debug_info"]["rendered_template"]
    assert f'<tool_call>{{"name": "get_weather", "arguments": {call.function.arguments}}}</tool_call>' in rendered
    assert f"<tool_response>{json.dumps(result)}</tool_response>" in rendered

    second = client.chat.completions.create(
        model=TOOLS_MODEL, messages=messages, tools=[WEATHER_TOOL], max_tokens=16, temperature=0
    )
    assert second.choices[0].message.role == "assistant"
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_required_tool_call_streamed(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=TOOLS_MODEL,
        messages=[{"role": "user", "content": "Weather in London?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=48,
        temperature=0,
        stream=True,
    ))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    (calls,) = deltas
    assert calls[0].index == 0 and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments)["city"] in ("Paris", "London")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_answers_in_prose(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=TOOLS_MODEL, messages=HELLO, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=6, temperature=0
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=SCRIPTED_MODEL, prompt="Once upon a time", max_tokens=6,
                                           temperature=0)
    assert re.fullmatch(r"cmpl-\d{1,3}", completion.id)
    assert completion.object == "text_completion"
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == ("The capital of France is Paris",
                                                                               "length")
    assert completion.usage is not None and completion.usage.completion_tokens == 6

    chunks = list(client.completions.create(
        model=SCRIPTED_MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_embeddings(client: openai.OpenAI) -> None:
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    packed = client.embeddings.create(model=MODEL, input=["hello", "world"])
    assert [d.index for d in packed.data] == [0, 1]
    assert len(packed.data[0].embedding) == 576
    assert math.isclose(math.hypot(*packed.data[0].embedding), 1.0, rel_tol=1e-4)
    floats = client.embeddings.create(model=MODEL, input="hello", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(packed.data[0].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens > 0
    short = client.embeddings.create(model=MODEL, input="hello", dimensions=64, encoding_format="float")
    assert len(short.data[0].embedding) == 64


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list()}
    assert {"smollm2:latest", "smollm2-tools:latest"} <= set(listed)
    assert listed["smollm2:latest"].owned_by == "library"
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "library")
    assert model.created == listed["smollm2:latest"].created


def test_errors_map_to_sdk_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert missing.value.body == {
        "message": "model 'no-such-model' not found", "type": "not_found_error", "param": None, "code": None
    }
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.retrieve("no-such-model")
    assert unknown.value.body == {  # ollama never sets `param`
        "message": "model 'no-such-model' not found", "type": "not_found_error", "param": None, "code": None
    }
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[])
    assert bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=HELLO, tools=[WEATHER_TOOL])  # no tools in template
