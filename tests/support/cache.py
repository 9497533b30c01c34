"""Helpers for cache-lifecycle tests: a mirror with a fast background pruner, pulls, and the check
that the catalogue and the blobs directory agree."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient

from registry.cache.lifecycle import Lifecycle
from registry.model.manifest import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_TEMPLATE
from registry.model.names import ModelName
from registry.server.app import create_app
from registry.server.services import SERVICES
from tests.support.catalogue import query
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.mirror import mirror_settings, services_of, tune

BLOB_NAME = re.compile(r"sha256-[0-9a-f]{64}")


def add_model(registry: FakeOllamaRegistry, name: str, size: int) -> bytes:
    """A model whose weights are `size` random bytes; template, params and config are shared by all."""
    weights = random.Random(name).randbytes(size)
    registry.add_model(f"library/{name}", "latest",
                       [(MEDIA_MODEL, weights), (MEDIA_TEMPLATE, b"{{ .Prompt }}"), (MEDIA_PARAMS, b"{}")])
    return weights


def key(name: str) -> str:
    """A model name as the catalogue keys its tag."""
    return ModelName.parse(name).key


async def cache_mirror(aiohttp_client: Callable[..., Awaitable[TestClient]], root: Path, upstream: str,
                       *, background_prune: bool = True, **env: str) -> TestClient:
    """An in-process mirror of `upstream` whose pruner looks at fills every 20 ms (or, without
    `background_prune`, only once at startup: the test runs the prunes it wants itself)."""
    app = await create_app(mirror_settings(root, upstream, **env))
    pruner = app[SERVICES].lifecycle.pruner
    pruner.poll = 0.02 if background_prune else 3600
    pruner.interval = 0.2 if background_prune else 3600
    client = await aiohttp_client(app)
    tune(services_of(client))
    return client


def lifecycle_of(client: TestClient) -> Lifecycle:
    return client.server.app[SERVICES].lifecycle


async def api_pull(client: TestClient, name: str) -> None:
    resp = await client.post("/api/pull", json={"model": name, "stream": False})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "success"


def catalogue(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "corral.db")


def tags(root: Path, url: str | None = None) -> set[str]:
    """Tag keys in the catalogue at `url`, by default the SQLite file in `root`."""
    return {row[0] for row in query(url or f"sqlite+aiosqlite:///{root / 'corral.db'}", "select name_key from tags")}


def blob_files(root: Path) -> dict[str, int]:
    return {"sha256:" + p.name[7:]: p.stat().st_size for p in (root / "models" / "blobs").iterdir()
            if BLOB_NAME.fullmatch(p.name)}


def assert_consistent(root: Path, url: str | None = None) -> None:
    """Every verified row has its file (same size) and vice versa; every tag's blobs are there;
    nothing but blobs (no stray partial, temporary or retired files) is left in the directory.
    The catalogue is the one at `url`, by default the SQLite file in `root`."""
    url = url or f"sqlite+aiosqlite:///{root / 'corral.db'}"
    rows = dict(query(url, "select digest, size from blobs where state = 'verified'"))
    incomplete = query(url, "select t.name_key, l.blob_digest from tags t join manifest_layers l "
                            "on l.manifest_digest = t.manifest_digest where l.blob_digest not in "
                            "(select digest from blobs where state = 'verified')")
    ((untagged,),) = query(url, "select count(*) from manifests where digest not in (select manifest_digest from tags)")
    assert rows == blob_files(root)
    assert not incomplete
    assert untagged == 0
    others = [p.name for p in (root / "models" / "blobs").iterdir() if not BLOB_NAME.fullmatch(p.name)]
    assert not others


async def wait_for(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll a condition that lives outside the event loop (the database file, a background task)."""
    async with asyncio.timeout(20):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.02)
