"""Catalogue writes that servers sharing one database make at the same moment, on both engines:
each is one statement (an upsert), so neither server fails on the other's row."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.model.manifest import CONFIG_TYPE, MANIFEST_V2, MEDIA_MODEL
from registry.model.names import Digest, ModelName
from registry.storage.catalog import Catalog
from registry.storage.db import BLOB_VERIFIED, make_engine, make_sessionmaker, upgrade_database
from registry.storage.leases import Leases
from registry.storage.store import BlobStore
from tests.support.catalogue import query
from tests.support.digests import sha256_bytes as sha
from tests.support.postgres import both_databases

pytestmark = both_databases
BIG = 7 * 2**30 + 5  # past 2^31 and 2^32


def manifest(weights_digest: str, weights_size: int, config: bytes = b"{}") -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_MODEL, "digest": weights_digest, "size": weights_size}],
    }).encode()


@pytest.fixture
async def two_servers(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Catalog, Catalog]]:
    """Two catalogues on one database, each with its own engine, as two servers have."""
    await upgrade_database(database_url)
    engines = [make_engine(database_url) for _ in range(2)]
    store = BlobStore(tmp_path / "blobs")
    try:
        yield tuple(Catalog(make_sessionmaker(engine), store, Leases()) for engine in engines)  # type: ignore[misc]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_the_same_model_stored_by_two_servers_at_once(two_servers: tuple[Catalog, Catalog],
                                                            database_url: str) -> None:
    name = ModelName.parse("shared")
    raw = manifest("sha256:" + "c" * 64, BIG)
    for _ in range(3):
        digests = await asyncio.gather(*(catalog.put_manifest(name, raw, upstream="https://registry.ollama.ai")
                                         for catalog in two_servers for _ in range(3)))
        assert len(set(digests)) == 1
    record = await two_servers[1].require(name)
    assert record.raw == raw and record.size == BIG + 2 and record.upstream == "https://registry.ollama.ai"
    assert query(database_url, "select count(*) from tags") == [(1,)]
    assert query(database_url, "select blob_digest, size from manifest_layers order by position") == [
        ("sha256:" + "c" * 64, BIG), (sha(b"{}"), 2)]


async def test_the_same_blob_recorded_by_two_servers_at_once(two_servers: tuple[Catalog, Catalog]) -> None:
    digest = Digest.parse("sha256:" + "d" * 64)
    await asyncio.gather(*(catalog.record_blob(digest, BIG, media_type=MEDIA_MODEL if i % 2 else None)
                           for i, catalog in enumerate(two_servers * 3)))
    row = await two_servers[0].blob(digest)
    assert (row.size, row.state, row.media_type) == (BIG, BLOB_VERIFIED, MEDIA_MODEL)


async def test_a_tag_moves_and_keeps_what_the_new_write_does_not_say(two_servers: tuple[Catalog, Catalog]) -> None:
    first, second = two_servers
    name = ModelName.parse("Mixed/Case:Tag")
    await first.put_manifest(name, manifest("sha256:" + "e" * 64, 10), upstream="https://up", fetched_at=100.0)
    before = await second.require(ModelName.parse("mixed/case:tag"))  # names match case-insensitively
    await second.put_manifest(ModelName.parse("mixed/case:tag"), before.raw)  # same manifest: nothing moves
    same = await first.require(name)
    assert (same.modified_at, same.fetched_at, same.upstream) == (before.modified_at, 100.0, "https://up")
    assert str(same.name) == str(name)  # the first spelling stays
    await asyncio.sleep(0.01)
    await second.put_manifest(name, manifest("sha256:" + "f" * 64, 11))
    moved = await first.require(name)
    assert moved.modified_at > before.modified_at and moved.created_at == before.created_at
    assert (moved.fetched_at, moved.upstream) == (100.0, "https://up")
