"""The /v2 read API: byte-exact manifests, HEAD sizes, Location on GET, Range semantics."""

from __future__ import annotations

import json
import os

import pytest
from aiohttp.test_utils import TestClient

from registry.model.manifest import CONFIG_TYPE, MANIFEST_V2, MEDIA_MODEL
from registry.model.names import Digest, ModelName
from registry.server.services import SERVICES
from tests.support.digests import sha256_bytes as sha

BLOB = os.urandom(300_001)
CONFIG = b'{"model_format":"gguf","model_family":"llama"}'


@pytest.fixture
async def model(client: TestClient) -> bytes:
    for data in (BLOB, CONFIG):
        assert (await client.post(f"/api/blobs/{sha(data)}", data=data)).status == 201
    # Spacing and key order differ from what corral would write: it must be served verbatim.
    raw = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha(CONFIG), "size": len(CONFIG)},
        "layers": [{"mediaType": MEDIA_MODEL, "digest": sha(BLOB), "size": len(BLOB)}],
    }, indent=3).encode()
    catalog = client.server.app[SERVICES].catalog
    await catalog.put_manifest(ModelName.parse("registry.ollama.ai/library/tiny:1b"), raw)
    return raw


async def test_manifest_is_byte_exact(client: TestClient, model: bytes) -> None:
    resp = await client.get("/v2/library/tiny/manifests/1b")
    assert resp.status == 200
    assert await resp.read() == model
    assert resp.headers["Docker-Content-Digest"] == sha(model)
    assert resp.headers["Content-Type"] == MANIFEST_V2
    by_digest = await client.get(f"/v2/library/tiny/manifests/{sha(model)}")
    assert await by_digest.read() == model
    head = await client.head("/v2/library/TINY/manifests/1B")  # names match case-insensitively
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(model)


async def test_blob_head_has_exact_length(client: TestClient, model: bytes) -> None:
    resp = await client.head(f"/v2/library/tiny/blobs/{sha(BLOB)}")
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == len(BLOB)
    assert resp.headers["Docker-Content-Digest"] == sha(BLOB)


async def test_blob_get_has_location_for_ollama(client: TestClient, model: bytes) -> None:
    path = f"/v2/library/tiny/blobs/{sha(BLOB)}"
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 200
    assert resp.headers["Location"] == path
    assert await resp.read() == BLOB


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=1000-", 1000, len(BLOB) - 1), ("bytes=300000-300000", 300000, 300000),
     ("bytes=-10", len(BLOB) - 10, len(BLOB) - 1), ("bytes=299990-999999", 299990, len(BLOB) - 1)],
)
async def test_ranges(client: TestClient, model: bytes, header: str, start: int, end: int) -> None:
    resp = await client.get(f"/v2/library/tiny/blobs/{sha(BLOB)}", headers={"Range": header})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(BLOB)}"
    body = await resp.read()
    assert body == BLOB[start : end + 1]
    assert int(resp.headers["Content-Length"]) == len(body)


@pytest.mark.parametrize("header", ["bytes=400000-", "bytes=500000-600000"])
async def test_unsatisfiable_range(client: TestClient, model: bytes, header: str) -> None:
    resp = await client.get(f"/v2/library/tiny/blobs/{sha(BLOB)}", headers={"Range": header})
    assert resp.status == 416


async def test_malformed_range_is_a_client_error(client: TestClient, model: bytes) -> None:
    resp = await client.get(f"/v2/library/tiny/blobs/{sha(BLOB)}", headers={"Range": "bytes=abc"})
    assert 400 <= resp.status < 500


async def test_quarantined_blob_is_never_served(client: TestClient, model: bytes) -> None:
    catalog = client.server.app[SERVICES].catalog
    await catalog.quarantine_blob(Digest.parse(sha(BLOB)))
    assert (await client.get(f"/v2/library/tiny/blobs/{sha(BLOB)}")).status == 404
    assert (await client.head(f"/v2/library/tiny/blobs/{sha(BLOB)}")).status == 404
