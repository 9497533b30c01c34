"""CORRAL_PULL_AUTH with ollama's downloader: its token goes with the manifest GET, the HEAD and
the resolve GET only; the ranged parts carry none, so the resolved `Location` is presigned."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yarl import URL

from registry.auth.presigned import URL_TTL
from registry.auth.token_client import fetch_token, parse_challenge
from registry.config import Settings
from registry.model.names import Digest
from registry.server.app import create_app
from tests.registry.conftest import make_settings
from tests.support.airgap import add_model, authorize, egress_to, sha
from tests.support.legacy_pull import LegacyPuller, PullError
from tests.support.mirror import services_of

ClientFactory = Callable[..., Awaitable[TestClient]]
WEIGHTS = bytes(range(256)) * 1200  # 300 KiB: five parts of 64 KiB
TEMPLATE = b"{{ .Prompt }}"
PART = 64 * 1024


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, CORRAL_PULL_AUTH="1")


@pytest.fixture
async def server(aiohttp_client: ClientFactory, settings: Settings) -> TestClient:
    client = await aiohttp_client(await create_app(settings))
    await add_model(client, "tiny", WEIGHTS, TEMPLATE)
    return client


@pytest.fixture
def key(settings: Settings) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    authorize(settings.models, key)
    return key


async def test_ollamas_downloader_pulls_every_byte(server: TestClient, key: Ed25519PrivateKey,
                                                   tmp_path: Path) -> None:
    base = str(server.make_url(""))
    pulled = await LegacyPuller(base, tmp_path / "client", min_part=PART, key=key).pull("library/tiny", "latest")
    assert pulled.blobs[sha(WEIGHTS)].read_bytes() == WEIGHTS
    assert pulled.blobs[sha(TEMPLATE)].read_bytes() == TEMPLATE
    assert pulled.range_requests >= 5  # the weights in parts, none with a token
    assert all("signature=" in url for url in pulled.data_urls)
    with pytest.raises(PullError, match=r"pull model manifest: 401: .*key is not in authorized_keys"):
        await LegacyPuller(base, tmp_path / "anonymous", min_part=PART).pull("library/tiny", "latest")


def challenged(resp: aiohttp.ClientResponse) -> bool:
    """401 with the Bearer challenge a client answers with a token request."""
    return resp.status == 401 and parse_challenge(resp.headers.get("WWW-Authenticate", "")) is not None


async def resolve(server: TestClient, key: Ed25519PrivateKey, digest: str, tmp_path: Path) -> URL:
    """The resolve GET as ollama sends it (with its token): the data URL its parts will use."""
    anonymous = await server.get(f"/v2/library/tiny/blobs/{digest}")
    assert challenged(anonymous)
    challenge = parse_challenge(anonymous.headers["WWW-Authenticate"])
    assert challenge is not None
    async with aiohttp.ClientSession() as http:
        bearer = await fetch_token(http, challenge, f"{server.host}:{server.port}", key, egress_to(tmp_path, server))
    resp = await server.get(f"/v2/library/tiny/blobs/{digest}", headers={"Authorization": f"Bearer {bearer}"},
                            allow_redirects=False)
    assert resp.status == 200
    return URL(resp.headers["Location"])


async def test_only_a_presigned_blob_get_is_admitted(server: TestClient, key: Ed25519PrivateKey,
                                                     tmp_path: Path) -> None:
    location = await resolve(server, key, sha(WEIGHTS), tmp_path)
    part = {"Range": "bytes=1000-1999"}
    ok = await server.get(location, headers=part)
    assert ok.status == 206 and await ok.read() == WEIGHTS[1000:2000]

    unsigned = await server.get(location.path, headers=part)
    assert challenged(unsigned)
    query = dict(location.query)
    refused = {
        "HEAD": ("HEAD", location.path),
        "manifest": ("GET", "/v2/library/tiny/manifests/latest"),
        "another digest": ("GET", f"/v2/library/tiny/blobs/{sha(TEMPLATE)}"),
        "another repository": ("GET", f"/v2/library/other/blobs/{sha(WEIGHTS)}"),
    }
    for what, (method, path) in refused.items():
        resp = await server.request(method, URL(path).with_query(query), headers=part)
        assert challenged(resp), what
    tampered = {
        "signature": {**query, "signature": query["signature"][:-1] + ("A" if query["signature"][-1] != "A" else "B")},
        "expiry": {**query, "expires": str(int(query["expires"]) + 3600)},
        "no signature": {"expires": query["expires"]},
    }
    for what, forged in tampered.items():
        resp = await server.get(location.with_query(forged), headers=part)
        assert challenged(resp), what

    presigned = services_of(server).presigned
    expired = presigned.query("library/tiny", Digest.parse(sha(WEIGHTS)), now=time.time() - URL_TTL - 1)
    assert (await server.get(location.with_query(expired), headers=part)).status == 401


async def test_a_restart_keeps_the_urls_it_handed_out(server: TestClient, key: Ed25519PrivateKey,
                                                      aiohttp_client: ClientFactory, settings: Settings,
                                                      tmp_path: Path) -> None:
    location = await resolve(server, key, sha(WEIGHTS), tmp_path)
    await server.close()
    restarted = await aiohttp_client(await create_app(settings))  # same models root, same corral key
    resp = await restarted.get(location, headers={"Range": f"bytes=0-{PART - 1}"})
    assert resp.status == 206 and await resp.read() == WEIGHTS[:PART]
