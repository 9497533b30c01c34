"""The official ollama Python client, unmodified: every method corral implements, sync and async."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import ollama
import pytest

from tests.clients.conftest import MODEL, SCRIPTED_MODEL, SERVER_ENV
from tests.clients.toolmodel import JSON_TOOLS_TEMPLATE, WEATHER_CALL_SCHEMA, get_weather
from tests.support.bigram import ANSWER
from tests.support.models import CHATML_TEMPLATE, smollm2_gguf
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.model

OPTIONS = {"temperature": 0, "num_predict": 6}
SCRIPTED = {"temperature": 0, "num_predict": 16}  # the scripted answer is 7 tokens, then the end
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def client(corral: ServerProcess) -> ollama.Client:
    return ollama.Client(host=corral.url)


@pytest.fixture
def async_client(corral: ServerProcess) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=corral.url)


def test_list_and_show(client: ollama.Client) -> None:
    listed = {m.model: m for m in client.list().models}
    assert "smollm2:latest" in listed
    assert listed["smollm2:latest"].details.family == "llama"
    shown = client.show(MODEL)
    assert shown.template == CHATML_TEMPLATE
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in shown.capabilities


def test_generate_streamed_and_not(client: ollama.Client) -> None:
    whole = client.generate(model=SCRIPTED_MODEL, prompt="Once upon a time", options=SCRIPTED)
    assert (whole.done, whole.done_reason, whole.response) == (True, "stop", ANSWER)
    assert whole.eval_count > 0 and whole.total_duration > 0 and whole.context
    parts = list(client.generate(model=SCRIPTED_MODEL, prompt="Once upon a time", options=SCRIPTED, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.response for p in parts) == whole.response


def test_chat_streamed_and_not(client: ollama.Client) -> None:
    whole = client.chat(model=SCRIPTED_MODEL, messages=HELLO, options=SCRIPTED)
    assert (whole.message.role, whole.message.content, whole.done) == ("assistant", ANSWER, True)
    parts = list(client.chat(model=SCRIPTED_MODEL, messages=HELLO, options=SCRIPTED, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count


def test_ps_lists_the_loaded_model(client: ollama.Client) -> None:
    client.generate(model=MODEL, prompt="Hi", options={"num_predict": 1})
    running = {m.model: m for m in client.ps().models}
    assert "smollm2:latest" in running
    assert running["smollm2:latest"].size > 0 and running["smollm2:latest"].expires_at.tzinfo is not None
    listed = {m.model: m for m in client.list().models}
    # bare hex as in /api/tags: ollama's CLI prints digest[:12] of both
    assert running["smollm2:latest"].digest == listed["smollm2:latest"].digest
    assert len(listed["smollm2:latest"].digest) == 64 and ":" not in listed["smollm2:latest"].digest


def test_embed_and_legacy_embeddings(client: ollama.Client) -> None:
    batch = client.embed(model=MODEL, input=["hello", "world"])
    assert len(batch.embeddings) == 2 and len(batch.embeddings[0]) == 576
    single = client.embed(model=MODEL, input="hello", dimensions=32)
    assert len(single.embeddings[0]) == 32
    assert len(client.embeddings(model=MODEL, prompt="hello").embedding) == 576


def test_create_from_blob_copy_delete(client: ollama.Client) -> None:
    digest = client.create_blob(smollm2_gguf())
    statuses = [p.status for p in client.create(
        model="py-created", files={"model.gguf": digest}, template=CHATML_TEMPLATE,
        system="You are terse.", parameters={"stop": ["<|im_end|>"]}, stream=True,
    )]
    assert statuses[-1] == "success"
    assert "SYSTEM You are terse." in client.show("py-created").modelfile
    assert client.copy("py-created", "py-copy").status == "success"
    assert {"py-created:latest", "py-copy:latest"} <= {m.model for m in client.list().models}
    assert client.delete("py-copy").status == "success"
    assert client.delete("py-created").status == "success"
    with pytest.raises(ollama.ResponseError) as gone:
        client.show("py-created")
    assert gone.value.status_code == 404


def test_chat_with_tools_round_trip(client: ollama.Client) -> None:
    """A Python function as the tool; `format` shaped like a call makes SmolLM2 call it, the
    client parses tool_calls, the test runs the function and sends the result back."""
    created = client.create(model="smollm2-json-tools", from_=MODEL, template=JSON_TOOLS_TEMPLATE)
    assert created.status == "success"
    messages: list = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat(model="smollm2-json-tools", messages=messages, tools=[get_weather],
                        format=WEATHER_CALL_SCHEMA, options={"temperature": 0, "num_predict": 32})
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather"
    result = get_weather(**call.function.arguments)
    messages += [first.message, {"role": "tool", "content": json.dumps(result), "tool_name": "get_weather"}]
    second = client.chat(model="smollm2-json-tools", messages=messages, tools=[get_weather], options=OPTIONS)
    assert second.message.role == "assistant" and second.done


def test_pull_progress_from_upstream(mirror: Callable[[], ServerProcess]) -> None:
    local = ollama.Client(host=mirror().url)
    events = list(local.pull(MODEL, stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [e for e in events if e.status.startswith("pulling ") and e.digest]
    assert all(e.status == f"pulling {e.digest[7:19]}" and e.total for e in layers)
    weights = [e for e in layers if e.total > 50_000_000]
    assert weights and weights[-1].completed == weights[-1].total
    assert "smollm2:latest" in {m.model for m in local.list().models}
    assert local.pull(MODEL).status == "success"  # now a cache hit, non-streamed
    assert local.generate(model=MODEL, prompt="Hi", options={"num_predict": 2}).done


def test_push_to_another_corral(client: ollama.Client, corral: ServerProcess, push_target_port: int,
                                tmp_path: Path) -> None:
    target = start_server(tmp_path / "target", extra_env=SERVER_ENV, port=push_target_port)
    try:
        # The receiving corral's operator authorises the sender's key (as ollama.com needs it too).
        public_key = (corral.root / "models" / "id_ed25519.pub").read_text()
        (target.root / "models" / "authorized_keys").write_text(public_key)
        name = f"127.0.0.1:{target.port}/library/pushed:latest"
        client.copy(MODEL, name)
        try:
            statuses = [p.status for p in client.push(name, insecure=True, stream=True)]
        finally:
            client.delete(name)
        assert statuses[-1] == "success"
        assert "pushed:latest" in {m.model for m in ollama.Client(host=target.url).list().models}
    finally:
        target.stop()


async def test_async_client(async_client: ollama.AsyncClient, mirror: Callable[[], ServerProcess]) -> None:
    assert "smollm2:latest" in {m.model for m in (await async_client.list()).models}
    parts = [p async for p in await async_client.chat(model=SCRIPTED_MODEL, messages=HELLO, options=SCRIPTED,
                                                      stream=True)]
    assert parts[-1].done and "".join(p.message.content for p in parts) == ANSWER
    generated = await async_client.generate(model=SCRIPTED_MODEL, prompt="Once upon a time", options=SCRIPTED)
    assert generated.done and generated.response == ANSWER
    embedded = await async_client.embed(model=MODEL, input="hello")
    assert len(embedded.embeddings[0]) == 576
    assert (await async_client.show(MODEL)).details.family == "llama"
    assert any(m.model == "smollm2:latest" for m in (await async_client.ps()).models)
    local = ollama.AsyncClient(host=mirror().url)
    events = [e async for e in await local.pull(MODEL, stream=True)]
    assert events[0].status == "pulling manifest" and events[-1].status == "success"
