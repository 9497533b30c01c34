"""Scheduler behaviour over HTTP: keep_alive, max loaded models, queue limit, parallel sequences,
cancellation, reloads. Models are the endless bigram model under several paths (symlinks), so each
is its own load and every request generates exactly `num_predict` tokens, on any CPU."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import aiohttp
import ollama
import pytest

from runner.engine.engine import Completion, Engine, Finished
from runner.engine.loading import EngineSettings
from runner.errors import QUEUE_FULL_MESSAGE
from runner.options import build_options
from runner.scheduler import RunnerConfig
from tests.support.bigram import write_endless_gguf
from tests.support.runner import SMALL_CTX, Harness, StartRunner, bigram_spec, smollm2_spec

pytestmark = pytest.mark.model

QUICK = {"temperature": 0, "num_predict": 2}


def _models(tmp_path: Path, *names: str) -> list:
    """One spec per name, each on its own path to the same weights (symlinks: no copy)."""
    specs = []
    endless = write_endless_gguf(tmp_path)
    for name in names:
        link = tmp_path / f"{name}.gguf"
        link.symlink_to(endless)
        specs.append(bigram_spec(tmp_path, f"{name}:latest", path=link))
    return specs


async def _loaded(harness: Harness) -> list[str]:
    return [m.model for m in (await harness.client().ps()).models]


async def test_load_only_and_unload_with_keep_alive_zero(harness: Harness) -> None:
    client = harness.client()
    loaded = await client.generate(model="smollm2", prompt="")
    assert (loaded.done, loaded.done_reason, loaded.response) == (True, "load", "")
    assert await _loaded(harness) == ["smollm2:latest"]
    unloaded = await client.chat(model="smollm2", messages=[], keep_alive=0)
    assert (unloaded.done, unloaded.done_reason, unloaded.message.role) == (True, "unload", "assistant")
    assert await _loaded(harness) == []


async def test_keep_alive_expiry_unloads(harness: Harness) -> None:
    client = harness.client()
    await client.generate(model="smollm2", prompt="Hi", options=QUICK, keep_alive=1)
    (entry,) = (await client.ps()).models
    assert entry.context_length == 256
    assert entry.size_vram == 0 and entry.size and entry.size > 0
    remaining = entry.expires_at.timestamp() - time.time()
    assert 0 < remaining <= 1.5
    await asyncio.sleep(1.6)
    assert await _loaded(harness) == []


async def test_keep_alive_zero_with_a_prompt_unloads_after_the_request(harness: Harness) -> None:
    result = await harness.client().generate(model="smollm2", prompt="Hi", options=QUICK, keep_alive="0s")
    assert result.done
    await asyncio.sleep(0.2)
    assert await _loaded(harness) == []


async def test_negative_keep_alive_means_forever(harness: Harness) -> None:
    await harness.client().generate(model="smollm2", prompt="", keep_alive=-1)
    (entry,) = (await harness.client().ps()).models
    assert entry.expires_at.year > 2200


async def test_a_request_without_keep_alive_keeps_the_models_duration(harness: Harness) -> None:
    client = harness.client()
    await client.generate(model="smollm2", prompt="", keep_alive="1h")
    await client.generate(model="smollm2", prompt="Hi", options=QUICK)
    (entry,) = (await client.ps()).models
    assert entry.expires_at.timestamp() - time.time() > 3000


async def test_max_loaded_models_evicts_the_idle_shortest_keep_alive(start_runner: StartRunner, tmp_path: Path) -> None:
    harness = await start_runner(RunnerConfig(max_loaded_models=2), _models(tmp_path, "a", "b", "c"))
    client = harness.client()
    await client.generate(model="a", prompt="", keep_alive="10m")
    await client.generate(model="b", prompt="", keep_alive="1m")
    assert sorted(await _loaded(harness)) == ["a:latest", "b:latest"]
    await client.generate(model="c", prompt="", keep_alive="5m")
    assert sorted(await _loaded(harness)) == ["a:latest", "c:latest"]
    assert harness.runner.loaded_paths() == {tmp_path / "a.gguf", tmp_path / "c.gguf"}


async def test_busy_model_is_evicted_once_its_request_ends(start_runner: StartRunner, tmp_path: Path) -> None:
    harness = await start_runner(RunnerConfig(max_loaded_models=1), _models(tmp_path, "a", "b"))
    client = harness.client()
    stream_a = await client.generate(
        model="a", prompt="Write a poem.", options={"temperature": 0, "num_predict": 30}, stream=True
    )
    first = await anext(stream_a)  # "a" is loaded and generating
    b = asyncio.create_task(client.generate(model="b", prompt="Hi", options=QUICK))
    rest = [chunk async for chunk in stream_a]
    assert not first.done and rest[-1].eval_count == 30
    assert (await b).done
    assert await _loaded(harness) == ["b:latest"]


async def test_queue_full_is_503_with_ollamas_message(start_runner: StartRunner, tmp_path: Path) -> None:
    harness = await start_runner(RunnerConfig(max_queue=1), _models(tmp_path, "a", "b"))
    async with aiohttp.ClientSession() as session:

        async def generate(model: str) -> tuple[int, dict]:
            body = {"model": model, "prompt": "Hi", "stream": False, "options": QUICK}
            async with session.post(harness.url + "/api/generate", json=body) as response:
                return response.status, await response.json()

        results = await asyncio.gather(generate("a"), generate("b"))
    assert sorted(status for status, _ in results) == [200, 503]
    assert {"error": QUEUE_FULL_MESSAGE} in [body for _, body in results]


async def test_parallel_requests_share_one_batched_decode(start_runner: StartRunner, tmp_path: Path) -> None:
    """A short request started while a long one decodes joins its batch: the two sequences advance
    in the same decode steps, so fewer steps than tokens are taken."""
    harness = await start_runner(RunnerConfig(num_parallel=2), _models(tmp_path, "e"))
    client = harness.client()
    await client.generate(model="e", prompt="")
    (model,) = harness.runner.scheduler.loaded()
    steps_before = model.engine.steps
    order: list[str] = []

    async def chat(tag: str, tokens: int, started: asyncio.Event | None = None) -> int:
        stream = await client.chat(
            model="e",
            messages=[{"role": "user", "content": f"Talk, {tag}."}],
            options={"temperature": 0, "num_predict": tokens},
            stream=True,
        )
        async for chunk in stream:
            order.append(tag)
            if started is not None:
                started.set()
            if chunk.done:
                return chunk.eval_count
        raise AssertionError("the stream ended without its final chunk")

    long_started = asyncio.Event()
    long = asyncio.create_task(chat("a", 2000, long_started))
    await long_started.wait()
    short = await chat("b", 20)
    assert not long.done(), "the long request must still be decoding when the short one ends"
    generated = short + await long
    assert (short, generated) == (20, 2020)
    first_b, last_a = order.index("b"), len(order) - 1 - order[::-1].index("a")
    assert first_b < last_a, f"not interleaved: {''.join(order)}"
    # one step decodes a token of each running sequence: 2020 tokens took fewer steps than that
    assert model.engine.steps - steps_before < generated - 10


async def test_cancelled_request_frees_its_slot(start_runner: StartRunner, tmp_path: Path) -> None:
    harness = await start_runner(specs=_models(tmp_path, "e"))
    client = harness.client()
    await client.generate(model="e", prompt="")
    (model,) = harness.runner.scheduler.loaded()
    body = {"model": "e", "prompt": "Count to one thousand.", "options": {"temperature": 0, "num_predict": 2000}}
    async with aiohttp.ClientSession() as session:
        response = await session.post(harness.url + "/api/generate", json=body)
        for _ in range(3):
            assert json.loads(await response.content.readline())["done"] is False
        response.close()
    started = time.perf_counter()
    result = await client.generate(model="e", prompt="Hi", options=QUICK)
    assert result.done and time.perf_counter() - started < 10
    assert not model.engine.busy
    assert harness.runner.stats.queue_depth == 0


async def test_changed_runner_options_reload_the_model(harness: Harness) -> None:
    client = harness.client()
    await client.generate(model="smollm2", prompt="Hi", options=QUICK)
    await client.generate(model="smollm2", prompt="Hi", options={**QUICK, "num_ctx": 512})
    (entry,) = (await client.ps()).models
    assert entry.context_length == 512
    (model,) = harness.runner.scheduler.loaded()
    await client.generate(model="smollm2", prompt="Hi", options={**QUICK, "num_ctx": 512, "temperature": 0.5})
    assert harness.runner.scheduler.loaded() == [model]  # sampling options do not reload


async def test_unload_by_name_and_stats(harness: Harness) -> None:
    await harness.client().generate(model="smollm2", prompt="Hi", options=QUICK)
    stats = harness.runner.stats
    assert stats.tokens_generated >= 2 and stats.prompt_tokens > 0
    assert harness.runner.loaded_names() == {"smollm2:latest"}
    assert await harness.runner.unload("smollm2:latest") is True
    assert await harness.runner.unload("smollm2:latest") is False
    assert harness.runner.loaded_names() == set()


async def test_unknown_model_does_not_disturb_loaded_ones(harness: Harness) -> None:
    client = harness.client()
    await client.generate(model="smollm2", prompt="")
    with pytest.raises(ollama.ResponseError) as exc:
        await client.generate(model="missing", prompt="Hi")
    assert exc.value.status_code == 404
    assert await _loaded(harness) == ["smollm2:latest"]


async def test_every_decode_runs_on_the_models_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """ggml's OpenMP team belongs to the calling thread: a decode from another thread (the warm-up
    in the loader's, as once happened) leaves a second team that halves decode speed on 2 cores.
    The Engine runs in a runner child; here it runs in this process, where the calls can be seen."""
    import llama_cpp

    callers: set[int] = set()
    decode = llama_cpp.llama_decode

    def recording_decode(ctx, batch):
        callers.add(threading.get_ident())
        return decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", recording_decode)
    spec = smollm2_spec()
    options = build_options(SMALL_CTX, spec.params, QUICK)
    engine = await asyncio.to_thread(Engine, spec, EngineSettings(num_ctx=SMALL_CTX))  # load: includes the warm-up
    try:
        tokens = tuple(engine.vocab.tokenize("Hi"))
        events = [event async for event in engine.complete(Completion(tokens=tokens, options=options))]
        assert isinstance(events[-1], Finished)
        await engine.embed([list(tokens)])
        assert callers == {engine._thread.ident}
    finally:
        await asyncio.to_thread(engine.close)
