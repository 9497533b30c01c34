"""Bad input on every model-management and registry endpoint: a clear 4xx, never a 500."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from aiohttp.test_utils import TestClient

from registry.server.services import SERVICES

GOOD = "sha256:" + "0" * 64
JSON_ROUTES = [("POST", "/api/show"), ("DELETE", "/api/delete"), ("POST", "/api/copy"), ("POST", "/api/create")]


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b'"text"', b"", b"\xff\xfe"])
async def test_malformed_bodies(client: TestClient, method: str, path: str, body: bytes) -> None:
    resp = await client.request(method, path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert isinstance((await resp.json())["error"], str)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/api/show", {}, 400, "model is required"),
        ("POST", "/api/show", {"model": 5}, 400, "model is required"),
        ("POST", "/api/show", {"model": "../../etc/passwd"}, 400, "invalid model name"),
        ("POST", "/api/show", {"model": "nope"}, 404, "model 'nope:latest' not found"),
        ("POST", "/api/show", {"model": "x", "verbose": "yes"}, 400, None),
        ("DELETE", "/api/delete", {"model": "nope"}, 404, "model 'nope' not found"),
        ("DELETE", "/api/delete", {"model": "a/b/c/d"}, 400, "invalid model name"),
        ("POST", "/api/copy", {"source": "nope", "destination": "x"}, 404, 'model "nope" not found'),
        ("POST", "/api/copy", {"source": "nope"}, 400, None),
        ("POST", "/api/copy", {"source": 1, "destination": 2}, 400, None),
        ("POST", "/api/copy", {"source": "a", "destination": "my.ns/x"}, 400, 'destination "my.ns/x" is invalid'),
        ("POST", "/api/create", {"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ("POST", "/api/create", {"model": "bad name!", "from": "x"}, 400, "invalid model name"),
        ("POST", "/api/create", {"model": "x", "files": {"../m.gguf": GOOD}}, 400, "file path must be relative"),
        ("POST", "/api/create", {"model": "x", "files": {"m.gguf": "md5:1"}}, 400, "invalid digest format"),
        ("POST", "/api/create", {"model": "x", "files": "m.gguf"}, 400, None),
        ("POST", "/api/create", {"model": "x", "from": "nope", "stream": False}, 503,
         "pull model manifest: nope:latest is not cached, and corral is offline (CORRAL_OFFLINE=1) and contacts "
         "only the hosts listed in CORRAL_ALLOWED_HOSTS; registry.ollama.ai is not one of them (list it there to "
         "allow it)"),
        ("POST", "/api/create", {"model": "x", "from": "evil.example/x/y"}, 400, None),
        ("POST", "/api/create", {"model": "x", "from": "y", "template": "{{ .Prompt"}, 400,
         "template error: template: :1: unclosed action"),
        ("POST", "/api/create", {"model": "x", "files": {"m.gguf": GOOD}, "template": "{{ end }}"}, 400,
         "template error: template: :1: unexpected {{end}}"),
        ("POST", "/api/create", {"model": "x", "files": {"m.gguf": GOOD}}, 400, None),
        ("POST", "/api/create", {"model": "x", "from": "y", "parameters": {"bogus_option": 1}}, 400, None),
        ("POST", "/api/create", {"model": "x", "from": "y", "parameters": {"temperature": "hot"}}, 400, None),
        ("POST", "/api/create", {"model": "x", "from": "y", "messages": [{"role": "wizard"}]}, 400, None),
        ("POST", "/api/create", {"model": "x", "from": "y", "quantize": "q4_0"}, 400, None),
    ],
)
async def test_bad_requests(client: TestClient, method: str, path: str, body: dict, status: int,
                            message: str | None) -> None:
    resp = await client.request(method, path, json=body)
    assert resp.status == status, await resp.text()
    error = (await resp.json())["error"]
    if message is not None:
        assert error == message


@pytest.mark.parametrize("digest", ["sha256:xyz", "md5:" + "0" * 32, "sha256-" + "0" * 63, "..%2F..%2Fetc"])
async def test_blob_routes_reject_bad_digests(client: TestClient, digest: str) -> None:
    assert (await client.head(f"/api/blobs/{digest}")).status == 400
    resp = await client.post(f"/api/blobs/{digest}", data=b"x")
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid digest format"


async def test_blob_upload_verifies_digest(client: TestClient) -> None:
    data = b"hello corral"
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await client.head(f"/api/blobs/{good}")).status == 404
    bad = await client.post(f"/api/blobs/{GOOD}", data=data)
    assert bad.status == 400 and "digest mismatch" in (await bad.json())["error"]
    assert (await client.post(f"/api/blobs/{good}", data=data)).status == 201
    assert (await client.post(f"/api/blobs/{good}", data=data)).status == 200
    assert (await client.head(f"/api/blobs/{good}")).status == 200


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/library/nope/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        (f"/v2/library/nope/manifests/{GOOD}", 404, "MANIFEST_UNKNOWN"),
        ("/v2/library/bad!name/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/library/x/manifests/bad!tag", 400, "NAME_INVALID"),
        (f"/v2/library/x/blobs/{GOOD}", 404, "BLOB_UNKNOWN"),
        ("/v2/library/x/blobs/sha256:nothex", 400, "DIGEST_INVALID"),
        ("/v2/library/x/blobs/..%2F..%2Fcorral.db", 400, "DIGEST_INVALID"),
    ],
)
async def test_registry_errors(client: TestClient, path: str, status: int, code: str) -> None:
    resp = await client.get(path)
    assert resp.status == status
    assert (await resp.json())["errors"][0]["code"] == code


async def test_blob_head_unknown(client: TestClient) -> None:
    assert (await client.head(f"/v2/library/x/blobs/{GOOD}")).status == 404


async def test_ping_and_version(client: TestClient) -> None:
    assert (await client.get("/v2/")).status == 200
    assert (await client.get("/")).status == 200
    assert "version" in await (await client.get("/api/version")).json()
    assert (await client.get("/api/tags")).status == 200


async def test_client_disconnect_mid_upload_leaves_nothing(client: TestClient) -> None:
    """A real socket announcing 1 MB, sending 100 kB, then vanishing: no blob, no temp file."""
    store = client.server.app[SERVICES].store
    _reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST /api/blobs/{GOOD} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".encode() + b"a" * 100_000
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    for _ in range(50):
        await asyncio.sleep(0.05)
        if not any(store.root.iterdir()):
            break
    assert list(store.root.iterdir()) == []
    assert (await client.head(f"/api/blobs/{GOOD}")).status == 404
