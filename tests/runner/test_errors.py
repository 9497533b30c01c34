"""Bad input gets ollama's status and message — never a 500 for the client's mistakes, never a dead server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import gguf
import pytest

from runner.scheduler import RunnerConfig
from runner.spec import ModelSpec
from tests.support.runner import Harness, StartRunner, smollm2_spec

pytestmark = pytest.mark.model


async def _post(harness: Harness, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs = {"data": body} if isinstance(body, str | bytes) else {"json": body}
        async with session.post(harness.url + path, **kwargs) as response:
            return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
        ("/api/chat", {"model": "nope", "messages": []}, 404, "model 'nope' not found"),
        ("/api/embed", {"model": "nope", "input": "x"}, 404, "model 'nope' not found"),
        ("/api/embeddings", {"model": "nope", "prompt": "x"}, 404, 'model "nope" not found, try pulling it first'),
        ("/api/generate", {"prompt": "x"}, 400, "model is required"),
        ("/api/chat", {"model": ""}, 400, "model is required"),
        ("/api/generate", "", 400, "missing request body"),
        ("/api/chat", "{not json", 400, None),
        ("/api/generate", [1, 2], 400, "missing request body"),
        ("/api/generate", {"model": "smollm2", "prompt": 3}, 400, None),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "options": {"top_k": "x"}}, 400,
         'option "top_k" must be of type integer'),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "options": []}, 400, "options must be an object"),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "format": "xml"}, 400,
         'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "format": 5}, 400, None),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "keep_alive": "10"}, 400,
         'time: missing unit in duration "10"'),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "think": True}, 400,
         '"smollm2" does not support thinking'),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "think": "loud"}, 400, None),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "raw": True, "system": "s"}, 400,
         "raw mode does not support template, system, or context"),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "top_logprobs": 21}, 400,
         "top_logprobs must be between 0 and 20"),
        ("/api/chat", {"model": "smollm2", "messages": "hi"}, 400, None),
        ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": 1}]}, 400, None),
        ("/api/chat", {"model": "smollm2", "messages": [], "tools": "all"}, 400, None),
        ("/api/chat", {"model": "smollm2", "messages": [], "tools": [{"function": "f"}]}, 400, None),
        ("/api/chat", {"model": "smollm2", "messages": [], "tools": [{"function": {"name": 3}}]}, 400, None),
        ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
         "registry.ollama.ai/library/smollm2:latest does not support tools"),
        ("/api/embed", {"model": "smollm2", "input": 5}, 400, "invalid input type"),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "template": "{{ .Prompt"}, 400, None),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "images": ["aGk="]}, 400,
         "registry.ollama.ai/library/smollm2:latest does not support vision"),
        ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
         400, "registry.ollama.ai/library/smollm2:latest does not support vision"),
        ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "x", "images": ["aGk=", "a@"]}]},
         400, "illegal base64 data at input byte 1"),
        ("/api/generate", {"model": "smollm2", "prompt": "x", "images": "aGk="}, 400,
         "json: cannot unmarshal string into Go struct field GenerateRequest.images of type []api.ImageData"),
    ],
)  # fmt: skip
async def test_bad_requests(harness: Harness, path: str, body: Any, status: int, error: str | None) -> None:
    got_status, payload = await _post(harness, path, body)
    assert got_status == status, payload
    assert set(payload) == {"error"}
    if error is not None:
        assert payload["error"] == error


async def test_server_survives_bad_requests_and_still_generates(harness: Harness) -> None:
    for body in ({"model": "smollm2", "prompt": "x", "options": {"num_ctx": "big"}}, "[", {"model": "nope"}):
        status, _ = await _post(harness, "/api/generate", body)
        assert 400 <= status < 500
    result = await harness.client().generate(model="smollm2", prompt="Hi", options={"num_predict": 2})
    assert result.done


async def test_huge_num_ctx_is_clamped_to_the_trained_context(harness: Harness) -> None:
    client = harness.client()
    result = await client.generate(model="smollm2", prompt="Hi", options={"num_ctx": 10_000_000, "num_predict": 2})
    assert result.done
    (entry,) = (await client.ps()).models
    assert entry.context_length == 8192


async def test_prompt_longer_than_context_without_truncation_is_400(harness: Harness) -> None:
    body = {"model": "smollm2", "prompt": "word " * 400, "raw": True, "truncate": False, "stream": False}
    status, payload = await _post(harness, "/api/generate", body)
    assert status == 400
    assert payload["error"].startswith("the prompt is longer than the context length")
    status, payload = await _post(harness, "/api/generate", {**body, "truncate": True, "options": {"num_predict": 2}})
    assert status == 200 and payload["prompt_eval_count"] < 256


async def test_embed_input_longer_than_context_without_truncation_is_400(harness: Harness) -> None:
    body = {"model": "smollm2", "input": "word " * 400, "truncate": False}
    status, payload = await _post(harness, "/api/embed", body)
    assert (status, payload) == (400, {"error": "the input length exceeds the context length"})
    status, payload = await _post(harness, "/api/embed", {**body, "truncate": True})
    assert status == 200 and payload["prompt_eval_count"] == 256


def _unknown_architecture_gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "mystery")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


async def test_unloadable_architecture_is_a_clear_error(start_runner: StartRunner, tmp_path: Path) -> None:
    path = _unknown_architecture_gguf(tmp_path / "mystery.gguf")
    mystery = ModelSpec(
        name="mystery:latest",
        digest="sha256:" + "1" * 64,
        model_path=path,
        size=path.stat().st_size,
        gguf={"general.architecture": "mystery"},
    )
    harness = await start_runner(RunnerConfig(), [mystery, smollm2_spec()])
    status, payload = await _post(harness, "/api/generate", {"model": "mystery", "prompt": "Hi"})
    assert status == 500
    assert "mystery" in payload["error"] and "unknown model architecture" in payload["error"]
    result = await harness.client().generate(model="smollm2", prompt="Hi", options={"num_predict": 2})
    assert result.done


async def test_unexpected_failures_are_json_500s(harness: Harness) -> None:
    async def broken(name: str) -> ModelSpec:
        raise RuntimeError("catalogue offline")

    harness.runner.service._resolve = broken
    for path, body in (("/api/generate", {"model": "smollm2", "prompt": "x"}), ("/api/embed", {"model": "smollm2"})):
        status, payload = await _post(harness, path, body)
        assert (status, payload) == (500, {"error": "catalogue offline"})
