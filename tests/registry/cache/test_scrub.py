"""Scrub and startup reconciliation: a flipped byte is caught and healed from upstream; a store left
inconsistent by a crash is put right (and reported) before the first request."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from registry.server.app import create_app
from tests.registry.conftest import make_settings
from tests.support.airgap import add_model
from tests.support.cache import assert_consistent, cache_mirror, wait_for
from tests.support.digests import sha256_bytes as sha
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.legacy_pull import LegacyPuller
from tests.support.mirror import SMALL_SEGMENT, model_layers, services_of


def blob_path(root: Path, digest: str) -> Path:
    return root / "models" / "blobs" / digest.replace(":", "-")


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def blob_state(root: Path, digest: str) -> str | None:
    with sqlite3.connect(root / "corral.db") as db:
        row = db.execute("select state from blobs where digest = ?", (digest,)).fetchone()
    return row[0] if row else None


async def test_scrub_quarantines_a_flipped_byte_and_the_next_pull_fetches_good_bytes(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    layers = model_layers(3, 300_000)
    weights = layers[0][1]
    fake_registry.add_model("library/m", "latest", layers)
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False)
    base = str(mirror.make_url(""))
    await LegacyPuller(base, tmp_path / "client1", min_part=SMALL_SEGMENT).pull("library/m", "latest")
    upstream_gets = len(fake_registry.cdn_gets(sha(weights)))
    flip_byte(blob_path(tmp_path, sha(weights)), 123_456)

    resp = await mirror.post("/api/corral/scrub", json={})
    events = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [e["digest"] for e in events if e["status"] == "quarantined"] == [sha(weights)]
    assert events[-1] | {"seconds": 0, "finished_at": 0} == {
        "status": "success", "checked": 4, "quarantined": 1, "missing": 0, "seconds": 0, "finished_at": 0}
    assert blob_state(tmp_path, sha(weights)) == "quarantined"
    assert not blob_path(tmp_path, sha(weights)).exists()
    assert len(list((tmp_path / "models" / "quarantine").iterdir())) == 1

    again = await LegacyPuller(base, tmp_path / "client2", min_part=SMALL_SEGMENT).pull("library/m", "latest")
    assert again.blobs[sha(weights)].read_bytes() == weights
    assert len(fake_registry.cdn_gets(sha(weights))) > upstream_gets  # fetched again from upstream
    # ranged parts end as soon as their bytes are on disk; the fill's verdict may land just after
    for _ in range(100):
        if blob_state(tmp_path, sha(weights)) == "verified":
            break
        await asyncio.sleep(0.05)
    assert blob_state(tmp_path, sha(weights)) == "verified"
    assert blob_path(tmp_path, sha(weights)).read_bytes() == weights
    assert_consistent(tmp_path)

    metrics = await (await mirror.get("/metrics")).text()
    failures = next(f for f in text_string_to_metric_families(metrics) if f.name == "corral_verification_failures")
    assert {s.labels["source"]: s.value for s in failures.samples} == {"scrub": 1.0, "fill": 0.0}


async def test_background_scrub_finds_corruption_by_itself(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    layers = model_layers(4, 100_000)
    fake_registry.add_model("library/m", "latest", layers)
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False,
                                CORRAL_SCRUB_INTERVAL="20ms")
    puller = LegacyPuller(str(mirror.make_url("")), tmp_path / "client", min_part=SMALL_SEGMENT)
    await puller.pull("library/m", "latest")
    flip_byte(blob_path(tmp_path, sha(layers[0][1])), 7)

    async def quarantined() -> bool:
        return blob_state(tmp_path, sha(layers[0][1])) == "quarantined"

    await wait_for(quarantined)
    assert services_of(mirror).counters.scrub_failures == 1


def write_fill_row(root: Path, digest: str, size: int, done: int) -> None:
    with sqlite3.connect(root / "corral.db") as db:
        db.execute("insert into fills (digest, size, media_type, source, repository, segments, created_at, "
                   "updated_at) values (?, ?, null, 'https://registry.ollama.ai', 'library/x', ?, 1, 1)",
                   (digest, size, json.dumps([[0, size, done]])))


def make_partial(root: Path, data: bytes, age: float = 0.0) -> Path:
    path = blob_path(root, sha(data)).with_name(blob_path(root, sha(data)).name + "-partial")
    path.write_bytes(data)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


async def test_startup_reconciles_disk_and_catalogue(aiohttp_client, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = await aiohttp_client(await create_app(settings))
    weights = {name: name.encode() * 5000 for name in ("gone", "unrecorded", "rotten", "fine")}
    for name, data in weights.items():
        await add_model(first, name, data)
    await first.close()

    blob_path(tmp_path, sha(weights["gone"])).unlink()  # a row whose file vanished
    with sqlite3.connect(tmp_path / "corral.db") as db:  # files a crash left without their rows
        db.execute("delete from blobs where digest in (?, ?)", (sha(weights["unrecorded"]), sha(weights["rotten"])))
    flip_byte(blob_path(tmp_path, sha(weights["rotten"])), 10)
    stray = b"nobody needs this"
    blob_path(tmp_path, sha(stray)).write_bytes(stray)
    stale, fresh, unrecorded = b"stale partial", b"fresh partial", b"partial without progress"
    make_partial(tmp_path, stale, age=7200)
    write_fill_row(tmp_path, sha(stale), len(stale), 3)
    fresh_path = make_partial(tmp_path, fresh)
    write_fill_row(tmp_path, sha(fresh), len(fresh), 5)
    make_partial(tmp_path, unrecorded)
    write_fill_row(tmp_path, sha(b"row without file"), 16, 0)
    retired = blob_path(tmp_path, sha(stray)).with_name("sha256-" + "e" * 64 + "-retired-0a1b2c3d")
    retired.write_bytes(b"evicted, not yet unlinked")

    second = await aiohttp_client(await create_app(settings))
    report = (await (await second.get("/api/corral/status")).json())["reconcile"]
    assert report["dropped_rows"] == [sha(weights["gone"])]
    assert report["adopted"] == [sha(weights["unrecorded"])]
    assert report["quarantined"] == [sha(weights["rotten"])]
    assert report["removed_orphans"] == [sha(stray)]
    assert sorted(report["removed_partials"]) == sorted([sha(stale), sha(unrecorded)])
    assert sorted(report["dropped_fills"]) == sorted([sha(stale), sha(b"row without file")])
    assert report["removed_retired"] == 1
    assert report["incomplete_models"] == ["registry.ollama.ai/library/gone:latest",
                                           "registry.ollama.ai/library/rotten:latest"]
    assert fresh_path.exists()  # a fill that can resume, within ollama's grace hour
    assert not retired.exists() and not blob_path(tmp_path, sha(stray)).exists()
    assert blob_state(tmp_path, sha(weights["unrecorded"])) == "verified"
    resp = await second.get(f"/v2/library/unrecorded/blobs/{sha(weights['unrecorded'])}")
    assert await resp.read() == weights["unrecorded"]


async def test_noprune_keeps_partials_and_unreferenced_files(aiohttp_client, tmp_path: Path) -> None:
    (tmp_path / "models" / "blobs").mkdir(parents=True)
    stray, stale = b"kept by OLLAMA_NOPRUNE", b"an old partial"
    blob_path(tmp_path, sha(stray)).write_bytes(stray)
    stale_path = make_partial(tmp_path, stale, age=7200)
    client = await aiohttp_client(await create_app(make_settings(tmp_path, OLLAMA_NOPRUNE="1")))
    report = (await (await client.get("/api/corral/status")).json())["reconcile"]
    assert report["kept_orphans"] == [sha(stray)]
    assert report["removed_orphans"] == [] and report["removed_partials"] == []
    assert stale_path.exists() and blob_path(tmp_path, sha(stray)).exists()
