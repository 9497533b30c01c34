"""An upstream that refuses corral (a private model, a key it does not trust) reaches an ollama
client as a message it prints, with the upstream's reason, never as a bare 401.

ollama's client takes any 401 as a challenge to itself: it reads WWW-Authenticate, asks the realm
for a token and, with no Bearer realm there, fails with `realm host "" does not match original
host` (the test client reproduces that, tests/support/legacy_pull.py). corral answers 403 DENIED
instead, whose body the client prints after `pull model manifest: 403: `.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest
from aiohttp.test_utils import TestClient

from registry.model.manifest import MEDIA_MODEL
from tests.support.docker_registry import DockerRegistry, push_model, start_registry
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.legacy_pull import LegacyPuller, PullError
from tests.support.mirror import model_layers
from tests.support.server import start_server

MANIFEST_ERROR = "pull model manifest: 403: "
BASIC_REASON = ("UNAUTHORIZED: authentication required (it asks for Basic credentials; corral answers only "
                "ollama's signed Bearer tokens)")


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    """A docker-registry whose every request needs a password (htpasswd), holding library/m0."""
    registry = start_registry(tmp_path_factory.mktemp("private"), htpasswd={"owner": "s3cret"})
    try:
        push_model(registry.url, "library/m0", "latest", [(MEDIA_MODEL, b"weights" * 1000)], auth=("owner", "s3cret"))
        yield registry
    finally:
        registry.stop()


def _denied(error: PullError) -> dict:
    message = str(error)
    assert message.startswith(MANIFEST_ERROR), message
    (entry,) = json.loads(message[len(MANIFEST_ERROR):])["errors"]
    assert entry["code"] == "DENIED"
    return entry


def test_a_private_upstream_reaches_v2_and_api_clients_as_its_reason(private: DockerRegistry, tmp_path: Path) -> None:
    server = start_server(tmp_path / "corral", extra_env={"CORRAL_OFFLINE": "0", "CORRAL_UPSTREAM": private.url})
    try:
        with pytest.raises(PullError) as through_v2:
            asyncio.run(LegacyPuller(server.url, tmp_path / "client").pull("library/m0", "latest"))
        assert _denied(through_v2.value)["message"] == f"upstream registry {private.url} refused corral (401): " \
                                                       + BASIC_REASON
        client = ollama.Client(host=server.url)
        with pytest.raises(ollama.ResponseError) as quiet:
            client.pull("m0")
        assert quiet.value.status_code == 403  # not 401: ollama's own client would print "401 Unauthorized"
        assert quiet.value.error == f"pull model manifest: upstream registry {private.url} refused corral (401): " \
                                    + BASIC_REASON
        with pytest.raises(ollama.ResponseError) as streamed:
            for _ in client.pull("m0", stream=True):
                pass
        assert streamed.value.error == quiet.value.error
    finally:
        server.stop()


async def test_a_key_the_upstream_refuses_is_named_as_the_reason(mirror: TestClient, fake_registry: FakeOllamaRegistry,
                                                                  tmp_path: Path) -> None:
    fake_registry.add_model("library/m", "latest", model_layers(3, 1000))
    fake_registry.require_token = True
    fake_registry.trusted_keys = {"AAAAC3NzaC1lZDI1NTE5AAAAIsomeoneelse"}
    with pytest.raises(PullError) as refused:
        await LegacyPuller(str(mirror.make_url("")), tmp_path / "client").pull("library/m", "latest")
    message = _denied(refused.value)["message"]
    assert message == (f"upstream registry {fake_registry.url} refused corral (401): its token endpoint refused "
                       "corral's key (401: UNAUTHORIZED: this key may not pull); `corral key` prints the key it signs "
                       "with")
    resp = await mirror.post("/api/pull", json={"model": f"{fake_registry.host}/library/m", "stream": False})
    assert resp.status == 403 and (await resp.json())["error"] == f"pull model manifest: {message}"
