"""`/api/pull` through the mirror, and the mirror's manifest rules: progress shapes, host policy
(no SSRF), the version gate passed through, TTL re-checks, stale-if-error and offline mode."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.support.digests import sha256_bytes as sha
from tests.support.fake_ollama_registry import GATE_MESSAGE, FakeOllamaRegistry
from tests.support.legacy_pull import OLLAMA_UA
from tests.support.mirror import mirror_client, model_layers, services_of
from tests.support.server import free_port

Client = Callable[..., Awaitable[TestClient]]


async def pull_lines(client: TestClient, body: dict) -> list[dict]:
    resp = await client.post("/api/pull", json=body)
    assert resp.status == 200  # streaming: errors arrive as a last {"error": …} line, like ollama's
    return [json.loads(line) for line in (await resp.text()).splitlines()]


async def test_progress_stream_has_ollamas_shapes(mirror: TestClient, fake_registry: FakeOllamaRegistry) -> None:
    layers = model_layers(2, 300_000)
    raw = fake_registry.add_model("library/m", "1b", layers)
    fake_registry.cdn_rate = 3_000_000
    lines = await pull_lines(mirror, {"model": f"{fake_registry.host}/library/m:1b"})
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    manifest = json.loads(raw)
    digests = [layer["digest"] for layer in manifest["layers"]] + [manifest["config"]["digest"]]
    progress = [line for line in lines if "digest" in line]
    assert [d for i, d in enumerate(p["digest"] for p in progress) if i == 0 or progress[i - 1]["digest"] != d] \
        == digests  # one block per blob, layers then config, as ollama emits them
    for line in progress:
        assert line["status"] == f"pulling {line['digest'][7:19]}"
        assert line.get("completed", 1) > 0  # omitted while 0, never sent as 0
        assert set(line) <= {"status", "digest", "total", "completed"}
    weights = [p for p in progress if p["digest"] == sha(layers[0][1])]
    assert weights[0]["total"] == 300_000 and weights[-1]["completed"] == 300_000
    assert "completed" not in weights[0]
    # a second pull: each blob is a cache hit, one line with completed == total
    again = await pull_lines(mirror, {"model": f"{fake_registry.host}/library/m:1b", "stream": True})
    hits = [line for line in again if "digest" in line]
    assert [h["digest"] for h in hits] == digests and all(h["completed"] == h["total"] for h in hits)
    quiet = await mirror.post("/api/pull", json={"model": f"{fake_registry.host}/library/m:1b", "stream": False})
    assert quiet.status == 200 and await quiet.json() == {"status": "success"}
    tags = await (await mirror.get("/api/tags")).json()
    listed = {m["name"]: m["digest"] for m in tags["models"]}
    assert listed[f"{fake_registry.host}/library/m:1b"] == sha(raw)[7:]


async def test_foreign_hosts_are_refused_without_a_connection(mirror: TestClient) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        for name in ("evil.example/x/y", "127.0.0.1:1/x/y", f"127.0.0.1:{port}/x/y", "localhost/library/m"):
            for insecure in (False, True):
                resp = await mirror.post("/api/pull", json={"model": name, "insecure": insecure})
                assert resp.status == 400
                assert "not allowed" in (await resp.json())["error"]
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


async def test_allowed_host_is_fetched_over_http_when_insecure(aiohttp_client: Client, tmp_path: Path,
                                                               fake_registry: FakeOllamaRegistry) -> None:
    layers = model_layers(3, 10_000)
    fake_registry.add_model("team/m", "latest", layers)
    client = await mirror_client(aiohttp_client, tmp_path, f"http://127.0.0.1:{free_port()}",
                                 CORRAL_ALLOWED_HOSTS=f"{fake_registry.host},{fake_registry.cdn_host}")
    name = f"{fake_registry.host}/team/m"
    lines = await pull_lines(client, {"model": name, "insecure": True})
    assert lines[-1] == {"status": "success"}
    lines = await pull_lines(client, {"model": f"{fake_registry.host}/team/other"})
    assert "https://" + fake_registry.host in lines[-1]["error"]  # https unless insecure


async def test_version_gate_is_passed_through(mirror: TestClient, fake_registry: FakeOllamaRegistry) -> None:
    fake_registry.add_model("library/m", "latest", model_layers(4, 1000))
    fake_registry.min_version = (0, 40, 0)
    resp = await mirror.get("/v2/library/m/manifests/latest", headers={"User-Agent": OLLAMA_UA})
    assert resp.status == 412 and await resp.text() == GATE_MESSAGE
    lines = await pull_lines(mirror, {"model": f"{fake_registry.host}/library/m"})
    assert lines[-1] == {"error": f"pull model manifest: 412: {GATE_MESSAGE}"}
    quiet = await mirror.post("/api/pull", json={"model": f"{fake_registry.host}/library/m", "stream": False})
    assert quiet.status == 412


async def test_token_protected_upstream(mirror: TestClient, fake_registry: FakeOllamaRegistry) -> None:
    fake_registry.add_model("library/m", "latest", model_layers(5, 50_000))
    fake_registry.require_token = True
    lines = await pull_lines(mirror, {"model": f"{fake_registry.host}/library/m"})
    assert lines[-1] == {"status": "success"}
    assert fake_registry.token_requests and all(t.valid for t in fake_registry.token_requests)
    key = (Path(services_of(mirror).settings.key_path).with_suffix(".pub")).read_text().split()[1]
    assert {t.public_key for t in fake_registry.token_requests} == {key}


async def test_tags_are_rechecked_after_the_ttl_and_served_stale_when_upstream_fails(
    aiohttp_client: Client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    first = fake_registry.add_model("library/m", "latest", model_layers(6, 1000))
    client = await mirror_client(aiohttp_client, tmp_path, fake_registry.url, CORRAL_MANIFEST_TTL="1h")
    path = "/v2/library/m/manifests/latest"
    ua = {"User-Agent": OLLAMA_UA}
    assert await (await client.get(path, headers=ua)).read() == first
    second = fake_registry.add_model("library/m", "latest", model_layers(7, 1000))
    assert await (await client.get(path, headers=ua)).read() == first  # within the TTL: cached
    manifests = services_of(client).manifests
    manifests.settings = manifests.settings.replace(manifest_ttl=0.0)
    assert await (await client.get(path, headers=ua)).read() == second  # re-checked
    assert len(fake_registry.registry_requests("manifests")) == 2
    by_digest = await client.get(f"/v2/library/m/manifests/{sha(first)}", headers=ua)
    assert await by_digest.read() == first  # a digest never needs re-checking
    await fake_registry.close()  # upstream down: the cached tag is served, an unknown one is a 502
    assert await (await client.get(path, headers=ua)).read() == second
    missing = await client.get("/v2/library/other/manifests/latest", headers=ua)
    assert missing.status == 502
    assert fake_registry.url in (await missing.json())["errors"][0]["message"]
    lines = await pull_lines(client, {"model": f"{fake_registry.host}/library/other"})
    assert "unavailable" in lines[-1]["error"] and fake_registry.url in lines[-1]["error"]


async def test_offline_serves_the_cache_and_explains_the_rest(aiohttp_client: Client, tmp_path: Path,
                                                              fake_registry: FakeOllamaRegistry) -> None:
    layers = model_layers(8, 200_000)
    fake_registry.add_model("library/m", "latest", layers)
    online = await mirror_client(aiohttp_client, tmp_path, fake_registry.url,
                                 CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host)
    lines = await pull_lines(online, {"model": "m"})  # the model /v2/library/m names
    assert lines[-1] == {"status": "success"}
    await online.close()
    before = len(fake_registry.log)
    offline = await mirror_client(aiohttp_client, tmp_path, fake_registry.url, CORRAL_OFFLINE="1",
                                  CORRAL_MANIFEST_TTL="0s")
    ua = {"User-Agent": OLLAMA_UA}
    assert (await offline.get("/v2/library/m/manifests/latest", headers=ua)).status == 200
    blob = await offline.get(f"/v2/library/m/blobs/{sha(layers[0][1])}")
    assert await blob.read() == layers[0][1]
    lines = await pull_lines(offline, {"model": "m"})
    assert lines[-1] == {"status": "success"}
    missing = await offline.get("/v2/library/other/manifests/latest", headers=ua)
    assert missing.status == 404 and "CORRAL_OFFLINE" in (await missing.json())["errors"][0]["message"]
    resp = await offline.post("/api/pull", json={"model": f"{fake_registry.host}/library/other", "stream": False})
    assert resp.status == 503 and "CORRAL_OFFLINE" in (await resp.json())["error"]
    await asyncio.sleep(0)
    assert len(fake_registry.log) == before  # not a single request upstream
