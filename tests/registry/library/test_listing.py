"""/api/tags as ollama ≥ 0.30 lists models: capabilities, context and embedding lengths, bare
digests and Go's timestamps; and /api/delete's 404 names the model as the client gave it."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import gguf
import ollama
import pytest
from aiohttp.test_utils import TestClient

from tests.support.digests import sha256_bytes as sha
from tests.support.models import write_gguf
from tests.support.server import run_cli, start_server

GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?(Z|[+-]\d\d:\d\d)$")
TOOLS_AND_SUFFIX = "{{ if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}{{ if .Suffix }}<fim>{{ .Suffix }}{{ end }}"


async def _create(client: TestClient, name: str, weights: Path, **fields: object) -> None:
    data = await asyncio.to_thread(weights.read_bytes)
    assert (await client.post(f"/api/blobs/{sha(data)}", data=data)).status == 201
    resp = await client.post("/api/create", json={"model": name, "files": {"w.gguf": sha(data)},
                                                   "stream": False, **fields})
    assert resp.status == 200, await resp.text()


def _chat_kv(writer: gguf.GGUFWriter) -> None:
    writer.add_context_length(2048)
    writer.add_embedding_length(64)
    writer.add_file_type(2)  # Q4_0


def _vision_kv(writer: gguf.GGUFWriter) -> None:
    writer.add_block_count(2)  # text blocks too: with vision blocks alone it would be a projector
    writer.add_uint32("llama.vision.block_count", 2)
    writer.add_context_length(4096)


def _embedding_kv(writer: gguf.GGUFWriter) -> None:
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_embedding_length(32)


@pytest.fixture
async def listed(client: TestClient, tmp_path: Path) -> dict[str, dict]:
    await _create(client, "chat", write_gguf(tmp_path / "chat.gguf", kv=_chat_kv), template=TOOLS_AND_SUFFIX)
    await _create(client, "seer", write_gguf(tmp_path / "seer.gguf", kv=_vision_kv))
    await _create(client, "embedder", write_gguf(tmp_path / "embed.gguf", arch="bert", kv=_embedding_kv))
    resp = await client.get("/api/tags")
    assert resp.status == 200
    return {entry["name"]: entry for entry in (await resp.json())["models"]}


async def test_entries_carry_capabilities_and_lengths_where_ollama_puts_them(listed: dict[str, dict]) -> None:
    chat = listed["chat:latest"]
    assert list(chat) == ["name", "model", "modified_at", "size", "digest", "details", "capabilities"]
    assert chat["capabilities"] == ["completion", "tools", "insert"]
    assert chat["details"] == {
        "parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
        "parameter_size": chat["details"]["parameter_size"], "quantization_level": "Q4_0",
        "context_length": 2048, "embedding_length": 64,
    }
    # ollama's list: the header's vision key first, then completion; no template layer, no tools
    assert listed["seer:latest"]["capabilities"] == ["vision", "completion"]
    assert listed["seer:latest"]["details"]["context_length"] == 4096
    assert "embedding_length" not in listed["seer:latest"]["details"]  # omitempty, as in Go
    embedder = listed["embedder:latest"]
    assert embedder["capabilities"] == ["embedding"]
    assert embedder["details"]["embedding_length"] == 32 and "context_length" not in embedder["details"]


async def test_digests_are_bare_hex_and_times_are_gos(client: TestClient, listed: dict[str, dict]) -> None:
    for entry in listed.values():
        assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
        assert GO_TIME.match(entry["modified_at"]), entry["modified_at"]
    shown = await (await client.post("/api/show", json={"model": "chat"})).json()
    assert GO_TIME.match(shown["modified_at"])


async def test_the_listed_digest_is_the_manifests_sha256(client: TestClient, listed: dict[str, dict]) -> None:
    resp = await client.get("/v2/library/chat/manifests/latest")
    assert hashlib.sha256(await resp.read()).hexdigest() == listed["chat:latest"]["digest"]


async def test_delete_of_a_missing_model_echoes_the_name_as_given(client: TestClient) -> None:
    for given in ("nope", "Library/Nope:Latest", "registry.ollama.ai/library/nope"):
        resp = await client.delete("/api/delete", json={"model": given})
        assert (resp.status, await resp.json()) == (404, {"error": f"model '{given}' not found"})
    resp = await client.delete("/api/delete", json={"name": "legacy"})  # the deprecated field
    assert (await resp.json()) == {"error": "model 'legacy' not found"}


def test_the_ollama_client_reads_the_listing(tmp_path: Path) -> None:
    """The unmodified ollama client parses the entries (Go's times included) against a real server."""
    server = start_server(tmp_path / "corral")
    try:
        weights = write_gguf(tmp_path / "chat.gguf", kv=_chat_kv)
        modelfile = tmp_path / "Modelfile"
        modelfile.write_text(f"FROM {weights}\nTEMPLATE \"\"\"{TOOLS_AND_SUFFIX}\"\"\"\n")
        assert run_cli(server, "create", "chat", "-f", str(modelfile)).returncode == 0
        (model,) = ollama.Client(host=server.url).list().models
        assert model.model == "chat:latest" and model.modified_at.tzinfo is not None
        assert model.details.quantization_level == "Q4_0" and re.fullmatch(r"[0-9a-f]{64}", model.digest)
    finally:
        server.stop()
