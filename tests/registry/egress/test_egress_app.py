"""The gate in a whole corral: pull, /v2, keep-warm and push all leave through it.

Offline, the upstream and a push destination are recording listeners that must never see a
connection; a real registry listed in CORRAL_ALLOWED_HOSTS is still used (a corral on the LAN).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.support.airgap import add_model
from tests.support.cache import lifecycle_of, wait_for
from tests.support.digests import sha256_bytes as sha
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.legacy_pull import OLLAMA_UA
from tests.support.listener import RecordingListener
from tests.support.mirror import mirror_client, model_layers

Client = Callable[..., Awaitable[TestClient]]
UA = {"User-Agent": OLLAMA_UA}


@pytest.fixture
async def listeners() -> AsyncIterator[tuple[RecordingListener, RecordingListener]]:
    upstream, peer = await RecordingListener().start(), await RecordingListener().start()
    yield upstream, peer
    await upstream.close()
    await peer.close()


async def refusal(client: TestClient, path: str, body: dict) -> tuple[int, str]:
    resp = await client.post(path, json=body)
    return resp.status, (await resp.json())["error"]


async def keep_warm_outcome(client: TestClient, name: str) -> dict:
    async def recorded() -> bool:
        return name in lifecycle_of(client).keep_warm.last

    await wait_for(recorded)
    return lifecycle_of(client).keep_warm.last[name]


async def test_offline_nothing_leaves_for_the_upstream_or_an_unlisted_host(
    aiohttp_client: Client, tmp_path: Path, listeners: tuple[RecordingListener, RecordingListener]
) -> None:
    upstream, peer = listeners
    client = await mirror_client(aiohttp_client, tmp_path, upstream.url, CORRAL_OFFLINE="1", CORRAL_SYNC="warm")
    status, error = await refusal(client, "/api/pull", {"model": "m", "stream": False})
    assert status == 503 and "CORRAL_OFFLINE=1" in error and f"{upstream.host} is not one" in error
    status, error = await refusal(client, "/api/pull", {"model": f"{peer.host}/library/m", "insecure": True})
    assert status == 400 and f"add {peer.host} to CORRAL_ALLOWED_HOSTS" in error
    manifest = await client.get("/v2/library/m/manifests/latest", headers=UA)
    assert manifest.status == 404 and "CORRAL_OFFLINE" in (await manifest.json())["errors"][0]["message"]
    assert (await client.get(f"/v2/library/m/blobs/{sha(b'x')}")).status == 404
    outcome = await keep_warm_outcome(client, "warm:latest")
    assert outcome["ok"] is False and "CORRAL_OFFLINE=1" in outcome["error"]

    await add_model(client, f"{peer.host}/library/m:latest", b"weights")
    await add_model(client, "m:latest", b"weights")
    for name in (f"{peer.host}/library/m", "m"):  # a LAN corral, and registry.ollama.ai itself
        for stream in (False, True):
            status, error = await refusal(client, "/api/push", {"model": name, "insecure": True, "stream": stream})
            assert status == 503 and "CORRAL_OFFLINE=1" in error and "list it there to allow it" in error
    assert upstream.accepted == 0 and peer.accepted == 0


async def test_online_a_push_goes_only_to_the_upstream_or_a_listed_host(
    aiohttp_client: Client, tmp_path: Path, listeners: tuple[RecordingListener, RecordingListener]
) -> None:
    upstream, peer = listeners
    client = await mirror_client(aiohttp_client, tmp_path, upstream.url)
    await add_model(client, f"{peer.host}/library/m:latest", b"weights")
    status, error = await refusal(client, "/api/push", {"model": f"{peer.host}/library/m", "insecure": True})
    assert status == 400 and f"add {peer.host} to CORRAL_ALLOWED_HOSTS to allow it" in error
    assert peer.accepted == 0
    await add_model(client, f"{upstream.host}/library/m:latest", b"weights")
    lines = await client.post("/api/push", json={"model": f"{upstream.host}/library/m", "insecure": True})
    assert lines.status == 200 and "error" in (await lines.text()).splitlines()[-1]  # it tried: the upstream
    assert upstream.accepted >= 1


async def test_offline_a_listed_registry_is_still_used(aiohttp_client: Client, tmp_path: Path,
                                                        fake_registry: FakeOllamaRegistry) -> None:
    fake_registry.add_model("library/warm", "latest", model_layers(31, 20_000))
    layers = model_layers(32, 20_000)
    fake_registry.add_model("team/m", "latest", layers)
    client = await mirror_client(aiohttp_client, tmp_path, fake_registry.url, CORRAL_OFFLINE="1",
                                 CORRAL_ALLOWED_HOSTS=f"{fake_registry.host},{fake_registry.cdn_host}",
                                 CORRAL_SYNC="warm")
    assert (await keep_warm_outcome(client, "warm:latest"))["ok"] is True
    resp = await client.post("/api/pull", json={"model": "team/m", "stream": False})
    assert resp.status == 200 and await resp.json() == {"status": "success"}
    blob = await client.get(f"/v2/team/m/blobs/{sha(layers[0][1])}")
    assert await blob.read() == layers[0][1]
    assert fake_registry.registry_requests("manifests") and fake_registry.cdn_gets(sha(layers[0][1]))
