"""`/api/create` `from` a model the store lacks: pulled through the mirror first, with the pull's
progress lines in the create stream (as `ollama create` with `FROM llama3.2`). The upstream is a
real Docker distribution registry (`docker-registry`) on loopback."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from registry.model.manifest import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE
from registry.model.names import ModelName
from registry.server.services import SERVICES
from tests.support.digests import sha256_bytes
from tests.support.docker_registry import DockerRegistry, push_model, start_registry
from tests.support.mirror import mirror_client
from tests.support.models import CHATML_TEMPLATE, write_gguf
from tests.support.server import free_port

Client = Callable[..., Awaitable[TestClient]]
PARAMS = b'{"stop":["<|im_end|>"]}'


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DockerRegistry, bytes]]:
    registry = start_registry(tmp_path_factory.mktemp("upstream"))
    try:
        weights = write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()
        raw = push_model(registry.url, "library/tiny", "1",
                         [(MEDIA_MODEL, weights), (MEDIA_TEMPLATE, CHATML_TEMPLATE.encode()), (MEDIA_PARAMS, PARAMS)])
        yield registry, raw
    finally:
        registry.stop()


async def create_lines(client: TestClient, body: dict) -> list[dict]:
    resp = await client.post("/api/create", json=body)
    assert resp.status == 200, await resp.text()
    return [json.loads(line) for line in (await resp.text()).splitlines()]


async def test_from_a_model_not_in_the_store_pulls_it_first(
    aiohttp_client: Client, tmp_path: Path, upstream: tuple[DockerRegistry, bytes]
) -> None:
    registry, raw = upstream
    client = await mirror_client(aiohttp_client, tmp_path, registry.url)
    lines = await create_lines(client, {"model": "terse", "from": "tiny:1", "system": "Be terse."})
    statuses = [line["status"] for line in lines]
    pulled = json.loads(raw)
    digests = [layer["digest"] for layer in pulled["layers"]]
    assert statuses[0] == "pulling manifest"
    assert statuses.index("verifying sha256 digest") < statuses.index("success") < len(statuses) - 1
    assert {line["digest"] for line in lines if "digest" in line} == {*digests, pulled["config"]["digest"]}
    params = b'{"stop":["\\u003c|im_end|\\u003e"]}\n'  # the base's parameters as Go's encoder writes them
    assert statuses[statuses.index("success") + 1:] == [
        f"using existing layer {digests[0]}",
        f"using existing layer {digests[1]}",
        f"creating new layer {sha256_bytes(b'Be terse.')}",
        f"creating new layer {sha256_bytes(params)}",
        "writing manifest",
        "success",
    ]
    catalog = client.server.app[SERVICES].catalog
    assert (await catalog.require(ModelName.parse("tiny:1"))).raw == raw  # the pull's own tag, byte for byte
    created = await catalog.require(ModelName.parse("terse"))
    assert [(x.media_type, x.from_) for x in created.manifest.layers] == [
        (MEDIA_MODEL, "tiny:1"), (MEDIA_TEMPLATE, "tiny:1"), (MEDIA_SYSTEM, None), (MEDIA_PARAMS, None)]


async def test_an_unreachable_upstream_is_an_error_line(aiohttp_client: Client, tmp_path: Path) -> None:
    client = await mirror_client(aiohttp_client, tmp_path, f"http://127.0.0.1:{free_port()}")
    lines = await create_lines(client, {"model": "x", "from": "tiny:1"})
    assert lines[0] == {"status": "pulling manifest"}
    assert set(lines[-1]) == {"error"} and lines[-1]["error"].startswith("pull model manifest: upstream registry ")
    assert "is unavailable" in lines[-1]["error"]
    quiet = await client.post("/api/create", json={"model": "x", "from": "tiny:1", "stream": False})
    assert quiet.status == 502 and (await quiet.json())["error"].startswith("pull model manifest: ")
    assert not (await (await client.get("/api/tags")).json())["models"]


async def test_a_model_the_upstream_lacks_is_ollamas_not_found(
    aiohttp_client: Client, tmp_path: Path, upstream: tuple[DockerRegistry, bytes]
) -> None:
    client = await mirror_client(aiohttp_client, tmp_path, upstream[0].url)
    lines = await create_lines(client, {"model": "x", "from": "nothere"})
    assert lines == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
