"""One contract, two `ContentSource`s: what the store holds is served the same by `LocalContent`
and by the pull-through `ProxyContent` that wraps it, and what nobody has is the same 404.

Each case runs the `/v2` read handlers (`V2Reads`) over one implementation in an application of
its own, so the contract is checked where clients meet it: on the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from registry.mirror.content import ContentSource
from registry.mirror.v2_reads import V2Reads
from registry.server.middleware import error_middleware
from registry.server.routes import REPO
from tests.support.airgap import add_model
from tests.support.digests import sha256_bytes
from tests.support.mirror import services_of

ClientFactory = Callable[..., Awaitable[TestClient]]
WEIGHTS = bytes(range(256)) * 1024  # 256 KiB


@pytest.fixture(params=["local", "proxy"])
async def source_client(request: pytest.FixtureRequest, aiohttp_client: ClientFactory,
                        mirror: TestClient) -> tuple[TestClient, bytes]:
    """A client of V2Reads over one implementation, with a model stored in the mirror behind it."""
    raw = await add_model(mirror, "tiny:1b", WEIGHTS)
    services = services_of(mirror)
    source: ContentSource = services.local if request.param == "local" else services.content
    reads = V2Reads(source)
    app = web.Application(middlewares=[error_middleware])  # OciError → the registry's error body
    app.add_routes([
        web.get(REPO + "/manifests/{reference}", reads.get_manifest),
        web.get(REPO + "/blobs/{digest}", reads.get_blob, allow_head=False),
        web.head(REPO + "/blobs/{digest}", reads.head_blob),
    ])
    # as ollama sends it: registry.ollama.ai (and its stand-in) gates manifests by client version
    return await aiohttp_client(app, headers={"User-Agent": "ollama/0.33.0"}), raw


async def test_a_stored_manifest_is_served_byte_exact_by_tag_and_by_digest(
        source_client: tuple[TestClient, bytes]) -> None:
    client, raw = source_client
    for reference in ("1b", sha256_bytes(raw)):
        resp = await client.get(f"/v2/library/tiny/manifests/{reference}")
        assert resp.status == 200
        assert await resp.read() == raw
        assert resp.headers["Docker-Content-Digest"] == sha256_bytes(raw)


async def test_a_stored_blob_has_its_size_its_bytes_and_its_ranges(source_client: tuple[TestClient, bytes]) -> None:
    client, _ = source_client
    path = f"/v2/library/tiny/blobs/{sha256_bytes(WEIGHTS)}"
    head = await client.head(path)
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == len(WEIGHTS)
    whole = await client.get(path)
    assert whole.status == 200
    assert await whole.read() == WEIGHTS
    part = await client.get(path, headers={"Range": "bytes=1000-1999"})
    assert part.status == 206
    assert await part.read() == WEIGHTS[1000:2000]


async def test_what_nobody_has_is_the_registry_404(source_client: tuple[TestClient, bytes]) -> None:
    client, _ = source_client
    manifest = await client.get("/v2/library/absent/manifests/latest")
    assert manifest.status == 404
    assert (await manifest.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    blob = await client.get(f"/v2/library/tiny/blobs/{sha256_bytes(b'nobody has this')}")
    assert blob.status == 404
    assert (await blob.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
