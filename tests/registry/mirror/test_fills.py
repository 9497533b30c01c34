"""Single-flight fills through the /v2 API: one upstream transfer, readers served while it runs,
faults survived, corruption quarantined, progress resumed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from registry.mirror.upstream import BlobSource, default_user_agent
from registry.model.names import Digest
from tests.support.digests import sha256_bytes as sha
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.legacy_pull import OLLAMA_UA, LegacyPuller
from tests.support.mirror import SMALL_SEGMENT, model_layers, services_of

SIZE = 400_000  # 7 segments of 64 KiB, the last one shorter


def setup_model(registry: FakeOllamaRegistry, seed: int = 1, size: int = SIZE) -> bytes:
    layers = model_layers(seed, size)
    registry.add_model("library/m", "latest", layers)
    return layers[0][1]


async def read_manifest(mirror: TestClient) -> None:
    """What every pull does first: a blob is fetched upstream only when a pulled manifest names it."""
    assert (await mirror.get("/v2/library/m/manifests/latest", headers={"User-Agent": OLLAMA_UA})).status == 200


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition that lives outside the event loop (the database file, another task's state)."""
    async with asyncio.timeout(10):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def published_size(mirror: TestClient, digest: Digest) -> int | None:
    """The blob's size in the catalogue once its fill has published it (a whole-blob response ends
    as soon as the bytes match the digest; the fsync and the catalogue follow)."""
    fill = services_of(mirror).fills.in_flight.get(digest)
    if fill is not None:
        await fill.wait_finished()
    return await services_of(mirror).catalog.servable_size(digest)


async def test_a_whole_blob_response_ends_once_the_bytes_match_not_once_published(
        mirror: TestClient, fake_registry: FakeOllamaRegistry) -> None:
    weights = setup_model(fake_registry)
    await read_manifest(mirror)
    digest = Digest.parse(sha(weights))
    publishing = asyncio.Event()
    fills = services_of(mirror).fills
    publish = fills._publish

    def held_publish(fill: object) -> None:  # the fsync and rename, held until the client has its bytes
        asyncio.run_coroutine_threadsafe(publishing.wait(), loop).result()
        publish(fill)

    loop = asyncio.get_running_loop()
    fills._publish = held_publish  # type: ignore[method-assign]
    async with asyncio.timeout(10):  # a response waiting for the publish would wait for ever
        resp = await mirror.get(f"/v2/library/m/blobs/{sha(weights)}")
        assert resp.status == 200 and await resp.read() == weights
    assert await services_of(mirror).catalog.servable_size(digest) is None
    publishing.set()
    assert await published_size(mirror, digest) == SIZE


async def test_eight_clients_one_upstream_transfer(mirror: TestClient, fake_registry: FakeOllamaRegistry,
                                                   tmp_path: Path) -> None:
    weights = setup_model(fake_registry)
    fake_registry.cdn_rate = 2_000_000  # slow enough that all clients overlap with the fill
    base = str(mirror.make_url(""))
    pullers = [LegacyPuller(base, tmp_path / f"client{i}", min_part=SMALL_SEGMENT) for i in range(8)]
    results = await asyncio.gather(*(p.pull("library/m", "latest") for p in pullers))
    for result in results:
        for digest, path in result.blobs.items():
            assert sha(path.read_bytes()) == digest
        assert result.blobs[sha(weights)].read_bytes() == weights
    for digest in results[0].blobs:
        gets = fake_registry.cdn_gets(digest)
        assert sum(g.sent for g in gets) == len(fake_registry.blobs[digest])  # each byte once
        assert all(g.status == 206 for g in gets)
    assert len(fake_registry.cdn_gets(sha(weights))) == -(-SIZE // SMALL_SEGMENT)  # one GET per segment
    assert len([e for e in fake_registry.registry_requests("blobs") if e.path.endswith(sha(weights))]) == 1
    assert len(fake_registry.registry_requests("manifests")) == 1


async def test_head_and_ranges_are_answered_while_filling(mirror: TestClient,
                                                          fake_registry: FakeOllamaRegistry) -> None:
    weights = setup_model(fake_registry)
    fake_registry.cdn_rate = 100_000  # each 64 KiB segment takes ~0.6 s
    await read_manifest(mirror)
    path = f"/v2/library/m/blobs/{sha(weights)}"
    full = asyncio.create_task(mirror.get(path))
    fills = services_of(mirror).fills
    digest = Digest.parse(sha(weights))
    await wait_until(lambda: (fill := fills.in_flight.get(digest)) is not None and fill.completed > 0)
    head = await mirror.head(path)
    assert head.status == 200 and int(head.headers["Content-Length"]) == SIZE
    ahead = (5 * SMALL_SEGMENT + 1000, 5 * SMALL_SEGMENT + 1999)  # far ahead of the first segment
    part = await mirror.get(path, headers={"Range": f"bytes={ahead[0]}-{ahead[1]}"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes {ahead[0]}-{ahead[1]}/{SIZE}"
    assert await part.read() == weights[ahead[0]:ahead[1] + 1]
    fill = fills.in_flight.get(Digest.parse(sha(weights)))
    assert fill is not None and not fill.verified  # all of that while the fill is still running
    response = await full
    assert response.status == 200 and response.headers["Location"] == path
    assert await response.read() == weights
    assert fake_registry.bytes_sent(sha(weights)) == SIZE


async def test_fill_goes_on_when_the_client_leaves(mirror: TestClient, fake_registry: FakeOllamaRegistry) -> None:
    weights = setup_model(fake_registry)
    fake_registry.cdn_rate = 1_000_000
    await read_manifest(mirror)
    url = mirror.make_url(f"/v2/library/m/blobs/{sha(weights)}")
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        await resp.content.readany()  # first bytes, then hang up
    catalog = services_of(mirror).catalog
    for _ in range(500):
        if await catalog.servable_size(Digest.parse(sha(weights))) == SIZE:
            break
        await asyncio.sleep(0.02)
    assert await catalog.servable_size(Digest.parse(sha(weights))) == SIZE
    assert fake_registry.bytes_sent(sha(weights)) == SIZE


@pytest.mark.parametrize("fault", ["truncate", "reset", "stall", "expire"])
async def test_cdn_faults_end_in_a_verified_blob(mirror: TestClient, fake_registry: FakeOllamaRegistry,
                                                 fault: str) -> None:
    weights = setup_model(fake_registry)
    fake_registry.cdn_faults = [fault, fault]
    await read_manifest(mirror)
    resp = await mirror.get(f"/v2/library/m/blobs/{sha(weights)}")
    assert resp.status == 200 and await resp.read() == weights
    assert await published_size(mirror, Digest.parse(sha(weights))) == SIZE


async def test_corrupt_byte_is_quarantined_never_served_then_fetched_again(
    mirror: TestClient, fake_registry: FakeOllamaRegistry, tmp_path: Path
) -> None:
    weights = setup_model(fake_registry)
    fake_registry.cdn_faults = ["corrupt"]
    await read_manifest(mirror)
    path = f"/v2/library/m/blobs/{sha(weights)}"
    async with aiohttp.ClientSession() as session, session.get(mirror.make_url(path)) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # cut short: the last byte is only sent once the digest matches
    services = services_of(mirror)
    digest = Digest.parse(sha(weights))
    assert await services.catalog.servable_size(digest) is None
    assert len(list((tmp_path / "models" / "quarantine").iterdir())) == 1
    assert not services.store.partial_path(digest).exists()
    again = await mirror.get(path)
    assert again.status == 200 and await again.read() == weights
    assert await published_size(mirror, digest) == SIZE


async def test_waiting_readers_get_a_clear_error_on_mismatch(mirror: TestClient,
                                                             fake_registry: FakeOllamaRegistry) -> None:
    setup_model(fake_registry)
    fake_registry.cdn_faults = ["corrupt"]
    resp = await mirror.post("/api/pull", json={"model": f"{fake_registry.host}/library/m"})
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert lines[-1]["error"].startswith("digest mismatch for sha256:")
    assert "quarantined" in lines[-1]["error"]
    retry = await mirror.post("/api/pull", json={"model": f"{fake_registry.host}/library/m", "stream": False})
    assert await retry.json() == {"status": "success"}


async def test_progress_is_saved_and_resumed(mirror: TestClient, fake_registry: FakeOllamaRegistry,
                                             tmp_path: Path) -> None:
    weights = setup_model(fake_registry)
    fake_registry.cdn_rate = 100_000
    services = services_of(mirror)
    digest = Digest.parse(sha(weights))
    src = BlobSource(services.upstream.default, "library/m", digest, default_user_agent())
    services.fills.start(src, SIZE)

    def saved() -> list[list[int]]:
        with sqlite3.connect(tmp_path / "corral.db") as db:
            row = db.execute("select segments from fills where digest = ?", (str(digest),)).fetchone()
        return json.loads(row[0]) if row else []

    await wait_until(lambda: sum(done for _, _, done in saved()) > SIZE // 4)
    await services.fills.close()  # what a shutdown does; kill -9 is covered by the e2e test
    checkpoint = saved()
    assert 0 < sum(done for _, _, done in checkpoint) < SIZE
    first_round = len(fake_registry.log)
    fake_registry.cdn_rate = 0
    await services.fills.start(src, SIZE).wait_finished()
    resumed = {e.range for e in fake_registry.log[first_round:] if e.host == "cdn"}
    expected = {f"bytes={offset + done}-{offset + length - 1}" for offset, length, done in checkpoint if done < length}
    assert resumed == expected
    assert services.store.path(digest).read_bytes() == weights
    assert saved() == []
