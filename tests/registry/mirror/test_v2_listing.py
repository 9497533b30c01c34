"""`/v2/_catalog` and `/v2/<name>/tags/list` as the distribution spec lists them, compared with
a real Docker distribution registry holding the same repositories, and behind CORRAL_PULL_AUTH."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.auth.token_client import fetch_token, parse_challenge
from registry.model.names import ModelName
from registry.server.app import create_app
from tests.registry.conftest import make_settings
from tests.support.airgap import add_model, authorize, egress_to
from tests.support.docker_registry import DockerRegistry, push_model, start_registry
from tests.support.mirror import services_of

MODEL = "application/vnd.ollama.image.model"
TAGS = [("library/b", "1"), ("library/a", "latest"), ("library/a", "2"), ("x/c", "v1"), ("library/a", "10")]
# What the docker-registry answers alike (its 2.8 ignores a malformed `n`; corral answers as v3 does).
SAME_AS_DISTRIBUTION = ["/v2/_catalog", "/v2/_catalog?n=2", "/v2/_catalog?n=2&last=library/b", "/v2/_catalog?n=0",
                        "/v2/_catalog?last=library/a", "/v2/_catalog?n=1&last=library/a", "/v2/_catalog?n=3",
                        "/v2/library/zz/tags/list"]


async def _store(client: TestClient) -> None:
    for repository, tag in TAGS:
        await add_model(client, f"{repository}:{tag}", f"{repository}:{tag}".encode())
    await add_model(client, "peer.lan:5000/library/elsewhere:latest", b"not under a /v2 path")


@pytest.fixture
async def listing(client: TestClient) -> TestClient:
    await _store(client)
    return client


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    registry = start_registry(tmp_path_factory.mktemp("distribution"))
    try:
        for repository, tag in TAGS:
            push_model(registry.url, repository, tag, [(MODEL, f"{repository}:{tag}".encode())])
        yield registry
    finally:
        registry.stop()


async def _answer(client: TestClient, path: str) -> tuple[int, object, str | None]:
    resp = await client.get(path)
    return resp.status, await resp.json(), resp.headers.get("Link")


@pytest.mark.parametrize("path", SAME_AS_DISTRIBUTION)
async def test_answers_as_a_distribution_registry_does(listing: TestClient, distribution: DockerRegistry,
                                                       path: str) -> None:
    theirs = await asyncio.to_thread(httpx.get, distribution.url + path)
    assert await _answer(listing, path) == (theirs.status_code, theirs.json(), theirs.headers.get("Link"))


async def test_following_the_links_walks_every_repository_once(listing: TestClient) -> None:
    path, seen = "/v2/_catalog?n=1", []
    while path:
        status, body, link = await _answer(listing, path)
        assert status == 200
        seen += body["repositories"]
        path = link[1:link.index(">")] if link else ""
    assert seen == ["library/a", "library/b", "x/c"]  # registry.ollama.ai's names: what /v2 paths serve


async def test_tags_are_listed_lexically_and_paginated(listing: TestClient) -> None:
    assert await _answer(listing, "/v2/library/a/tags/list") == (
        200, {"name": "library/a", "tags": ["10", "2", "latest"]}, None)
    assert await _answer(listing, "/v2/library/a/tags/list?n=1") == (
        200, {"name": "library/a", "tags": ["10"]}, '</v2/library/a/tags/list?last=10&n=1>; rel="next"')
    assert await _answer(listing, "/v2/library/a/tags/list?n=1&last=10") == (
        200, {"name": "library/a", "tags": ["2"]}, '</v2/library/a/tags/list?last=2&n=1>; rel="next"')
    assert await _answer(listing, "/v2/library/a/tags/list?n=5&last=2") == (
        200, {"name": "library/a", "tags": ["latest"]}, None)
    assert (await _answer(listing, "/v2/Library/A/tags/list"))[1] == {  # names match case-insensitively
        "name": "Library/A", "tags": ["10", "2", "latest"]}


@pytest.mark.parametrize(("path", "status", "code", "detail"), [
    ("/v2/_catalog?n=abc", 400, "PAGINATION_NUMBER_INVALID", {"n": "abc"}),
    ("/v2/_catalog?n=-1", 400, "PAGINATION_NUMBER_INVALID", {"n": -1}),
    ("/v2/_catalog?n=1001", 400, "PAGINATION_NUMBER_INVALID", {"n": 1001}),
    ("/v2/library/a/tags/list?n=x", 400, "PAGINATION_NUMBER_INVALID", {"n": "x"}),
    ("/v2/library/nope/tags/list", 404, "NAME_UNKNOWN", {"name": "library/nope"}),
    ("/v2/library/-bad/tags/list", 400, "NAME_INVALID", None),
])
async def test_errors_carry_the_specs_codes(listing: TestClient, path: str, status: int, code: str,
                                            detail: object) -> None:
    got, body, _ = await _answer(listing, path)
    assert got == status
    (error,) = body["errors"]
    assert error["code"] == code and error.get("detail") == detail


async def test_a_catalogue_page_holds_100_unless_asked(client: TestClient) -> None:
    catalog = services_of(client).catalog
    raw = await add_model(client, "library/m000:latest", b"weights")
    for i in range(1, 105):
        await catalog.put_manifest(ModelName.parse(f"library/m{i:03d}"), raw)
    status, body, link = await _answer(client, "/v2/_catalog")
    assert status == 200 and len(body["repositories"]) == 100
    assert link == '</v2/_catalog?last=library%2Fm099&n=100>; rel="next"'
    assert (await _answer(client, "/v2/_catalog?n=1000"))[1]["repositories"][-1] == "library/m104"


async def test_pull_auth_guards_the_listing_as_every_v2_read(aiohttp_client, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CORRAL_PULL_AUTH="1")
    client = await aiohttp_client(await create_app(settings))
    await _store(client)
    key = Ed25519PrivateKey.generate()
    authorize(settings.models, key)
    for path, scope in (("/v2/_catalog", "registry:catalog:*"), ("/v2/library/a/tags/list", "repository:library/a:")):
        anonymous = await client.get(path)
        assert anonymous.status == 401
        challenge = parse_challenge(anonymous.headers["WWW-Authenticate"])
        assert challenge is not None and challenge.scope.startswith(scope)
        async with aiohttp.ClientSession() as http:
            token = await fetch_token(http, challenge, f"{client.host}:{client.port}", key, egress_to(tmp_path, client))
        allowed = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert allowed.status == 200
