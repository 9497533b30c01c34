"""Deleting a model removes only what that model alone used, and never a file being read (on both engines)."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestClient

from registry.model.manifest import CONFIG_TYPE, MANIFEST_V2, MEDIA_MODEL, MEDIA_TEMPLATE
from registry.model.names import Digest, ModelName
from registry.server.services import SERVICES
from tests.support.digests import sha256_bytes as sha
from tests.support.postgres import both_databases

pytestmark = both_databases


async def upload(client: TestClient, data: bytes) -> Digest:
    assert (await client.post(f"/api/blobs/{sha(data)}", data=data)).status == 201
    return Digest.parse(sha(data))


def manifest(config: bytes, *layers: tuple[str, bytes]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": mt, "digest": sha(d), "size": len(d)} for mt, d in layers],
    }).encode()


async def test_delete_keeps_shared_and_unrelated_blobs(client: TestClient) -> None:
    services = client.server.app[SERVICES]
    shared, own, config, pending = b"template shared", b"weights of a", b"{}", b"uploaded for a later create"
    for data in (shared, own, config, pending):
        await upload(client, data)
    a = ModelName.parse("a")
    await services.catalog.put_manifest(a, manifest(config, (MEDIA_MODEL, own), (MEDIA_TEMPLATE, shared)))
    await services.catalog.put_manifest(ModelName.parse("b"), manifest(config, (MEDIA_TEMPLATE, shared)))
    removed = await services.catalog.delete(a)
    assert removed == [Digest.parse(sha(own))]
    assert not services.store.exists(Digest.parse(sha(own)))
    for data in (shared, config, pending):  # still used by b, or waiting for its create
        assert services.store.exists(Digest.parse(sha(data)))
        assert (await client.head(f"/api/blobs/{sha(data)}")).status == 200


async def test_delete_while_reading_leaves_the_blob_to_the_pruner(client: TestClient) -> None:
    services = client.server.app[SERVICES]
    weights, config = b"w" * 100_000, b"{}"
    for data in (weights, config):
        await upload(client, data)
    name = ModelName.parse("reading")
    await services.catalog.put_manifest(name, manifest(config, (MEDIA_MODEL, weights)))
    digest = Digest.parse(sha(weights))
    lease = services.leases.acquire(digest)
    with open(services.store.path(digest), "rb") as reader:  # noqa: ASYNC230 - a reader holding the file open
        await services.catalog.delete(name)
        assert services.store.exists(digest)  # protected while leased
        assert reader.read() == weights
    lease.release()
    await services.catalog.collect_garbage([])  # nothing released: a no-op
    assert (await services.catalog.blob(digest)) is not None  # kept for the pruner's grace period
