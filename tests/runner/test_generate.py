"""/api/generate and /api/chat through the `ollama` Python client: the real SmolLM2 model where
only the protocol is checked, the scripted bigram model where the answer itself is."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.support.bigram import ANSWER
from tests.support.runner import Harness

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "seed": 42, "num_predict": 12}
QUESTION = "What is the capital of France?"


def _check_final(chunk: dict) -> None:
    """Every field of ollama's final chunk, with its JSON type (durations in nanoseconds)."""
    assert chunk["done"] is True
    assert chunk["done_reason"] in ("stop", "length")
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count"):
        assert isinstance(chunk[key], int) and chunk[key] > 0, key
    assert isinstance(chunk["eval_duration"], int) and chunk["eval_duration"] > 0
    assert chunk["total_duration"] >= chunk["load_duration"]
    assert isinstance(chunk["created_at"], str) and chunk["created_at"].endswith("Z")


async def _ndjson(harness: Harness, path: str, body: dict) -> tuple[int, str, list[dict]]:
    async with aiohttp.ClientSession() as session, session.post(harness.url + path, json=body) as response:
        text = await response.text()
        lines = [json.loads(line) for line in text.splitlines() if line]
        return response.status, response.headers["Content-Type"], lines


async def test_generate_streamed_has_every_ndjson_field(scripted: Harness) -> None:
    status, content_type, lines = await _ndjson(
        scripted, "/api/generate", {"model": "bigram", "prompt": QUESTION, "options": GREEDY}
    )
    assert status == 200
    assert content_type == "application/x-ndjson"
    *parts, final = lines
    assert parts
    for part in parts:
        assert set(part) == {"model", "created_at", "response", "done"}
        assert part["model"] == "bigram" and part["done"] is False and isinstance(part["response"], str)
    _check_final(final)
    assert final["response"] == "" and final["done_reason"] == "stop"
    assert isinstance(final["context"], list) and all(isinstance(t, int) for t in final["context"])
    assert "".join(p["response"] for p in parts) == ANSWER


async def test_generate_with_the_ollama_client_streamed_and_not(harness: Harness) -> None:
    client = harness.client()
    whole = await client.generate(model="smollm2", prompt=QUESTION, options=GREEDY, stream=False)
    pieces = [
        chunk async for chunk in await client.generate(model="smollm2", prompt=QUESTION, options=GREEDY, stream=True)
    ]
    assert whole.done and pieces[-1].done
    assert whole.response == "".join(chunk.response for chunk in pieces)
    assert whole.eval_count == pieces[-1].eval_count
    _check_final(whole.model_dump(exclude_none=True))
    assert whole.context and whole.context == pieces[-1].context


async def test_chat_with_the_ollama_client_streamed_and_not(scripted: Harness) -> None:
    client = scripted.client()
    messages = [{"role": "user", "content": QUESTION}]
    whole = await client.chat(model="bigram", messages=messages, options=GREEDY, stream=False)
    pieces = [
        chunk async for chunk in await client.chat(model="bigram", messages=messages, options=GREEDY, stream=True)
    ]
    assert whole.message.role == "assistant"
    assert whole.message.content == ANSWER
    assert whole.message.content == "".join(chunk.message.content for chunk in pieces)
    assert all(chunk.message.role == "assistant" for chunk in pieces)
    final = pieces[-1].model_dump(exclude_none=True)
    _check_final(final)
    assert "context" not in final


async def test_greedy_output_is_deterministic(harness: Harness) -> None:
    client = harness.client()
    options = {"temperature": 0, "seed": 7, "num_predict": 24}
    first = await client.generate(model="smollm2", prompt="Tell me a story.", options=options, stream=False)
    # a different conversation in between must not leak through the prompt cache
    await client.generate(model="smollm2", prompt="List three fruits.", options=options, stream=False)
    second = await client.generate(model="smollm2", prompt="Tell me a story.", options=options, stream=False)
    assert first.response == second.response and first.eval_count == second.eval_count


async def test_seeded_sampling_is_reproducible(harness: Harness) -> None:
    client = harness.client()
    options = {"temperature": 1.0, "seed": 1234, "num_predict": 16}
    runs = [await client.generate(model="smollm2", prompt="Name a color.", options=options, stream=False) for _ in "ab"]
    assert runs[0].response == runs[1].response


async def test_num_predict_limits_tokens(harness: Harness) -> None:
    result = await harness.client().generate(
        model="smollm2", prompt="Write a long essay about the sea.", options={"temperature": 0, "num_predict": 5}
    )
    assert result.eval_count == 5
    assert result.done_reason == "length"


async def test_stop_words_end_generation_without_the_stop_text(scripted: Harness) -> None:
    client = scripted.client()
    free = await client.generate(model="bigram", prompt=QUESTION, options=GREEDY)
    assert free.response == ANSWER
    stopped = await client.generate(model="bigram", prompt=QUESTION, options={**GREEDY, "stop": ["Paris"]})
    assert stopped.done_reason == "stop"
    assert stopped.response == "The capital of France is "
    split = await client.generate(model="bigram", prompt=QUESTION, options={**GREEDY, "stop": ["ital of"]})
    assert split.response == "The cap"  # a stop string spanning tokens cuts inside a token


async def test_raw_prompt_skips_the_template_and_context(harness: Harness) -> None:
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    client = harness.client()
    raw = await client.generate(model="smollm2", prompt=prompt, raw=True, options=GREEDY)
    templated = await client.generate(model="smollm2", prompt=QUESTION, options=GREEDY)
    assert raw.response == templated.response
    assert raw.context is None


async def test_context_continues_a_conversation(harness: Harness) -> None:
    client = harness.client()
    first = await client.generate(model="smollm2", prompt="My name is Ada.", options=GREEDY)
    status, _, (debug,) = await _ndjson(
        harness,
        "/api/generate",
        {"model": "smollm2", "prompt": "What is my name?", "context": first.context, "_debug_render_only": True},
    )
    assert status == 200
    rendered = debug["_debug_info"]["rendered_template"]
    assert rendered.startswith("<|im_start|>user\nMy name is Ada.<|im_end|>")
    assert rendered.endswith("<|im_start|>user\nWhat is my name?<|im_end|>\n<|im_start|>assistant\n")


async def test_debug_render_only_returns_the_prompt_like_ollama(harness: Harness) -> None:
    status, content_type, (chat,) = await _ndjson(
        harness,
        "/api/chat",
        {
            "model": "smollm2",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "_debug_render_only": True,
        },
    )
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert set(chat) == {"model", "created_at", "message", "done", "_debug_info"}
    assert chat["message"] == {"role": "", "content": ""} and chat["done"] is False
    assert chat["_debug_info"] == {
        "rendered_template": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    }
    status, _, (gen,) = await _ndjson(
        harness, "/api/generate", {"model": "smollm2", "prompt": "Hi", "system": "Sys", "_debug_render_only": True}
    )
    assert status == 200
    assert set(gen) == {"model", "created_at", "response", "done", "_debug_info"}
    assert gen["_debug_info"]["rendered_template"] == (
        "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


async def test_template_and_suffix_overrides(harness: Harness) -> None:
    body = {
        "model": "smollm2",
        "prompt": "def add(a, b):",
        "system": "S",
        "template": "[{{ .System }}] {{ .Prompt }} => {{ .Response }}",
        "_debug_render_only": True,
    }
    _, _, (override,) = await _ndjson(harness, "/api/generate", body)
    assert override["_debug_info"]["rendered_template"] == "[S] def add(a, b): => "
    fim = {**body, "suffix": "return c", "template": "", "system": ""}
    status, _, (error,) = await _ndjson(harness, "/api/generate", fim)
    assert status == 400
    assert error == {"error": "registry.ollama.ai/library/smollm2:latest does not support insert"}


async def test_json_format_constrains_output(harness: Harness) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    client = harness.client()
    result = await client.generate(
        model="smollm2", prompt="Describe Paris as JSON.", format=schema, options={"temperature": 0, "num_predict": 40}
    )
    data = json.loads(result.response)
    assert isinstance(data["city"], str) and isinstance(data["population"], int)
    plain = await client.generate(
        model="smollm2", prompt="Give a JSON object.", format="json", options={"temperature": 0, "num_predict": 40}
    )
    assert plain.response.lstrip().startswith("{")


async def test_chat_truncates_old_messages_to_fit_num_ctx(harness: Harness) -> None:
    filler = "word " * 60
    messages = [{"role": "system", "content": "SYSTEM"}]
    for i in range(6):
        messages += [{"role": "user", "content": f"{i} {filler}"}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": "LAST"})
    _, _, (debug,) = await _ndjson(
        harness, "/api/chat", {"model": "smollm2", "messages": messages, "_debug_render_only": True}
    )
    rendered = debug["_debug_info"]["rendered_template"]
    assert rendered.startswith("<|im_start|>system\nSYSTEM<|im_end|>")
    assert "LAST" in rendered
    assert "0 word" not in rendered  # the oldest turns were dropped
    assert "5 word" in rendered  # the newest that fit were kept


async def test_embed_and_legacy_embeddings(harness: Harness) -> None:
    client = harness.client()
    result = await client.embed(model="smollm2", input=["hello world", "goodbye"])
    assert len(result.embeddings) == 2
    assert all(abs(sum(v * v for v in vector) - 1) < 1e-3 for vector in result.embeddings)
    assert result.prompt_eval_count and result.prompt_eval_count > 0
    short = await client.embed(model="smollm2", input="hello world", dimensions=8)
    assert len(short.embeddings[0]) == 8
    legacy = await client.embeddings(model="smollm2", prompt="hello world")
    assert legacy.embedding == pytest.approx(result.embeddings[0], abs=1e-5)
    empty = await client.embed(model="smollm2", input=[])
    assert empty.embeddings == []


async def test_logprobs_streamed_and_collected(harness: Harness) -> None:
    body = {"model": "smollm2", "prompt": QUESTION, "options": GREEDY, "logprobs": True, "top_logprobs": 3}
    _, _, lines = await _ndjson(harness, "/api/generate", body)
    *parts, final = lines
    entries = [entry for part in parts for entry in part.get("logprobs", [])]
    assert len(entries) == final["eval_count"] - (final["done_reason"] == "stop")
    assert "".join(e["token"] for e in entries) == "".join(p["response"] for p in parts)
    for entry in entries:
        assert entry["logprob"] <= 0
        alternatives = entry["top_logprobs"]
        assert len(alternatives) == 3 and alternatives[0]["token"] == entry["token"]  # greedy picks the best
        assert [a["logprob"] for a in alternatives] == sorted((a["logprob"] for a in alternatives), reverse=True)
    whole = await harness.client().chat(
        model="smollm2", messages=[{"role": "user", "content": QUESTION}], options=GREEDY, logprobs=True
    )
    assert whole.logprobs and all(not entry.top_logprobs for entry in whole.logprobs)
    assert "".join(entry.token for entry in whole.logprobs) == whole.message.content
