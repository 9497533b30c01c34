"""Which blobs the mirror may fetch upstream: those a manifest pulled for the repository names.

A push into corral asks HEAD for every blob before it sends a manifest, and must hear about this
store only; every pull reads its manifest first (by tag or by digest), so its blobs stay fetchable.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from tests.support.digests import sha256_bytes as sha
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.legacy_pull import OLLAMA_UA, LegacyPuller
from tests.support.mirror import SMALL_SEGMENT, model_layers

UA = {"User-Agent": OLLAMA_UA}


async def test_a_blob_no_pulled_manifest_names_is_answered_locally(
        mirror: TestClient, fake_registry: FakeOllamaRegistry) -> None:
    layers = model_layers(3, 200_000)
    fake_registry.add_model("library/m", "latest", layers)
    path = f"/v2/library/m/blobs/{sha(layers[0][1])}"
    for method in ("HEAD", "GET"):
        resp = await mirror.request(method, path)
        assert resp.status == 404, method
    body = await (await mirror.get(path)).json()
    assert body["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert fake_registry.log == []  # upstream holds it, and was not asked

    assert (await mirror.get("/v2/library/m/manifests/latest", headers=UA)).status == 200
    head = await mirror.head(path)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(layers[0][1])
    assert (await mirror.head(f"/v2/library/other/blobs/{sha(layers[0][1])}")).status == 404  # m's, not other's
    resp = await mirror.get(path)
    assert resp.status == 200 and await resp.read() == layers[0][1]


async def test_a_pull_by_digest_fetches_its_blobs(mirror: TestClient, fake_registry: FakeOllamaRegistry,
                                                  tmp_path: Path) -> None:
    layers = model_layers(4, 200_000)
    raw = fake_registry.add_model("library/m", "latest", layers)
    fake_registry.manifests[("library/m", sha(raw))] = raw  # registries serve a manifest by its digest too
    puller = LegacyPuller(str(mirror.make_url("")), tmp_path / "client", min_part=SMALL_SEGMENT)
    pulled = await puller.pull("library/m", sha(raw))
    assert pulled.manifest_raw == raw
    for media_type, data in layers:
        assert pulled.blobs[sha(data)].read_bytes() == data, media_type
