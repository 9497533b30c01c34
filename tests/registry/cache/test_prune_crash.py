"""kill -9 of a real `corral serve` in the middle of pruning hundreds of models; restart reconciles."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path

import httpx

from registry.model.manifest import MEDIA_MODEL, MEDIA_TEMPLATE
from registry.model.names import ModelName
from registry.storage.catalog import Catalog
from registry.storage.db import make_engine, make_sessionmaker, upgrade_database
from registry.storage.leases import Leases
from registry.storage.store import BlobStore
from tests.support.airgap import manifest_for
from tests.support.cache import assert_consistent, blob_files, catalogue, tags
from tests.support.server import ServerProcess, run_cli, start_server

MODELS = 300
WEIGHTS = 32 * 1024
CONFIG = b'{"model_format":"gguf","model_family":"llama"}'


async def seed(root: Path) -> dict[str, bytes]:
    """MODELS small models written by corral's own store and catalogue, oldest first."""
    url = f"sqlite+aiosqlite:///{root / 'corral.db'}"
    await upgrade_database(url)
    engine = make_engine(url)
    store = BlobStore(root / "models" / "blobs")
    catalog = Catalog(make_sessionmaker(engine), store, Leases())
    rng = random.Random(6)
    weights: dict[str, bytes] = {}
    for i in range(MODELS):
        name = f"m{i:03d}:latest"
        weights[name] = rng.randbytes(WEIGHTS)
        layers = {MEDIA_MODEL: weights[name], MEDIA_TEMPLATE: b"{{ .Prompt }}"}
        for data in (*layers.values(), CONFIG):
            result = await store.ingest(_once(data))
            await catalog.record_blob(result.digest, result.size)
        await catalog.put_manifest(ModelName.parse(name), manifest_for(layers, CONFIG))
    await engine.dispose()
    return weights


async def _once(data: bytes):
    yield data


def evictions_logged(server: ServerProcess) -> int:
    return server.log().count("corral.prune: evicted ")


def kill_mid_prune(server: ServerProcess, evictions: int, jitter: random.Random) -> None:
    """SIGKILL once `evictions` models are gone, at a random point inside the next eviction."""
    deadline = time.monotonic() + 60
    while evictions_logged(server) < evictions and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(jitter.uniform(0, 0.006))  # one eviction takes a few milliseconds here
    server.stop(signal.SIGKILL)
    assert evictions_logged(server) >= evictions


def crash_state(root: Path) -> tuple[set[str], int]:
    """Check what a crash left: the catalogue is consistent on its own (each model whole or gone) and
    the disk holds at least what it lists. Returns the orphan files and the count of retired files."""
    with catalogue(root) as db:
        rows = {d for (d,) in db.execute("select digest from blobs where state = 'verified'")}
        for name_key, blob in db.execute("select t.name_key, l.blob_digest from tags t join manifest_layers l "
                                         "on l.manifest_digest = t.manifest_digest"):
            assert blob in rows, f"{name_key} lost {blob}"
    files = set(blob_files(root))
    assert rows <= files  # rows first, then files: the disk never holds less than the catalogue
    retired = [p for p in (root / "models" / "blobs").iterdir() if "-retired-" in p.name]
    return files - rows, len(retired)


def test_kill_9_mid_prune_then_restart_reconciles(tmp_path: Path) -> None:
    root = tmp_path / "corral"
    root.mkdir()
    weights = asyncio.run(seed(root))
    # over the quota from the start: the background pruner begins evicting as soon as corral is up
    quota = {"CORRAL_MAX_CACHE": str(MODELS * WEIGHTS // 5), "CORRAL_CACHE_HIGH_WATERMARK": "0.9",
             "CORRAL_CACHE_LOW_WATERMARK": "0.5"}
    jitter = random.Random(9)
    server = start_server(root, quota)
    kill_mid_prune(server, 40, jitter)
    fixed = []
    for _ in range(2):  # crash, restart (reconciles, prunes on), crash again
        orphans, retired = crash_state(root)
        survivors = tags(root)
        server = start_server(root, quota)
        report = httpx.get(f"{server.url}/api/corral/status", timeout=10).json()["reconcile"]
        assert sorted(report["removed_orphans"]) == sorted(orphans)
        assert report["removed_retired"] == retired
        assert report["dropped_rows"] == [] and report["incomplete_models"] == []
        fixed.append(len(orphans) + retired)
        assert tags(root) <= survivors
        kill_mid_prune(server, 25, jitter)
    survivors = tags(root)
    assert len(survivors) > MODELS // 10 + 10, "the prune finished before the kill; nothing was tested"

    orphans, retired = crash_state(root)
    server = start_server(root)  # no quota now: what we see is the reconciliation alone
    try:
        report = httpx.get(f"{server.url}/api/corral/status", timeout=10).json()["reconcile"]
        assert sorted(report["removed_orphans"]) == sorted(orphans)
        assert report["removed_retired"] == retired
        assert_consistent(root)
        assert tags(root) == survivors
        for name in random.Random(1).sample(sorted(survivors), 5):
            short = ModelName.parse(name).model
            manifest = httpx.get(f"{server.url}/v2/library/{short}/manifests/latest", timeout=10).json()
            digest = manifest["layers"][0]["digest"]
            body = httpx.get(f"{server.url}/v2/library/{short}/blobs/{digest}", timeout=10).content
            assert body == weights[f"{short}:latest"]
        print(json.dumps({"evicted": MODELS - len(survivors), "fixed per restart": [*fixed, len(orphans) + retired]}))
        oldest = ModelName.parse(min(survivors)).display_shortest()
        assert run_cli(server, "pin", oldest).returncode == 0
        listing = run_cli(server, "status")
        assert listing.returncode == 0 and "pinned" in next(row for row in listing.stdout.splitlines() if oldest in row)
        dry = run_cli(server, "prune", "--dry-run")
        assert dry.returncode == 0 and "(all the disk can hold)" in dry.stdout, dry.stderr
    finally:
        server.stop()
