"""Redirects are egress too: a blob's data URL may leave the registry's host but not for a local
address (unless listed), and a manifest never leaves the registry's host."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient

from tests.support.digests import sha256_bytes as sha
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.legacy_pull import OLLAMA_UA
from tests.support.listener import RecordingListener
from tests.support.mirror import mirror_client, model_layers

Client = Callable[..., Awaitable[TestClient]]
UA = {"User-Agent": OLLAMA_UA}


async def pull_error(client: TestClient, name: str) -> tuple[int, str]:
    resp = await client.post("/api/pull", json={"model": name, "stream": False})
    return resp.status, (await resp.json())["error"]


async def test_a_blob_redirect_to_an_unlisted_local_cdn_is_refused(aiohttp_client: Client, tmp_path: Path,
                                                                   fake_registry: FakeOllamaRegistry) -> None:
    layers = model_layers(21, 50_000)
    fake_registry.add_model("library/m", "latest", layers)
    cdn = await RecordingListener().start()
    try:
        fake_registry.data_base = cdn.url  # the registry's 307s point at a listener on loopback, not listed
        client = await mirror_client(aiohttp_client, tmp_path / "a", fake_registry.url)
        assert (await client.get("/v2/library/m/manifests/latest", headers=UA)).status == 200
        digest = sha(layers[0][1])
        blob = await client.get(f"/v2/library/m/blobs/{digest}")
        message = (await blob.json())["errors"][0]["message"]
        assert blob.status == 502 and "a loopback address" in message and "CORRAL_ALLOWED_HOSTS" in message
        status, error = await pull_error(client, f"{fake_registry.host}/library/m")
        assert status == 502 and cdn.host in error and "CORRAL_ALLOWED_HOSTS" in error
        assert cdn.accepted == 0  # refused before a socket opened
    finally:
        await cdn.close()


async def test_listing_the_cdn_is_what_lets_it_be_used(aiohttp_client: Client, tmp_path: Path,
                                                       fake_registry: FakeOllamaRegistry) -> None:
    layers = model_layers(22, 50_000)
    fake_registry.add_model("library/m", "latest", layers)
    unlisted = await mirror_client(aiohttp_client, tmp_path / "unlisted", fake_registry.url)
    assert (await unlisted.get("/v2/library/m/manifests/latest", headers=UA)).status == 200  # a pull names it
    assert (await unlisted.get(f"/v2/library/m/blobs/{sha(layers[0][1])}")).status == 502
    assert fake_registry.cdn_gets(sha(layers[0][1])) == [] and not [e for e in fake_registry.log if e.host == "cdn"]
    listed = await mirror_client(aiohttp_client, tmp_path / "listed", fake_registry.url,
                                 CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host)
    assert (await listed.get("/v2/library/m/manifests/latest", headers=UA)).status == 200
    blob = await listed.get(f"/v2/library/m/blobs/{sha(layers[0][1])}")
    assert blob.status == 200 and await blob.read() == layers[0][1]


async def test_a_manifest_redirect_to_another_host_is_refused_and_nothing_is_stored(
    aiohttp_client: Client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    other = await FakeOllamaRegistry().start()
    try:
        other.add_model("library/m", "latest", model_layers(23, 1000))
        fake_registry.manifest_redirects[("library/m", "latest")] = f"{other.url}/v2/library/m/manifests/latest"
        # even listed, the other host is not where this registry's manifest (and token) may go
        client = await mirror_client(aiohttp_client, tmp_path, fake_registry.url,
                                     CORRAL_ALLOWED_HOSTS=f"{other.host},{other.cdn_host}")
        resp = await client.get("/v2/library/m/manifests/latest", headers=UA)
        message = (await resp.json())["errors"][0]["message"]
        assert resp.status == 502 and "another host" in message and other.host in message
        status, error = await pull_error(client, f"{fake_registry.host}/library/m")
        assert status == 502 and error.startswith("pull model manifest: ") and "another host" in error
        assert other.log == []
        assert (await (await client.get("/api/tags")).json())["models"] == []
        real = fake_registry.add_model("library/real", "latest", model_layers(24, 1000))
        fake_registry.manifest_redirects[("library/alias", "latest")] = \
            f"{fake_registry.url}/v2/library/real/manifests/latest"
        same_host = await client.get("/v2/library/alias/manifests/latest", headers=UA)
        assert same_host.status == 200 and await same_host.read() == real  # as Go's client follows it
        assert json.loads(real)["layers"]
    finally:
        await other.close()
