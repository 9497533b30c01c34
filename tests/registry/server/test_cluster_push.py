"""Push across the nodes of a cluster, with real processes: an upload session started on one node
is continued and finished on another (and back), and registry tokens and their nonces hold on
every node."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.auth.keys import sign_challenge, token_request_data
from tests.support.airgap import authorize
from tests.support.catalogue import query
from tests.support.digests import sha256_bytes as sha
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, start_server

UPLOADS = "/v2/library/pushed/blobs/uploads/"


def node_env(shared: Path, database_url: str, name: str) -> dict[str, str]:
    return {"OLLAMA_MODELS": str(shared), "CORRAL_DATABASE_URL": database_url, "CORRAL_CLUSTER": "1",
            "CORRAL_NODE_NAME": name, "CORRAL_OWNER_HEARTBEAT": "0.3s"}


@pytest.fixture
def nodes(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    url = postgres.new_database()
    shared = tmp_path / "shared-models"
    a = start_server(tmp_path / "a", node_env(shared, url, "a"))
    try:
        b = start_server(tmp_path / "b", node_env(shared, url, "b"))
        try:
            yield a, b, url
        finally:
            b.stop()
    finally:
        a.stop()


def token_url(node: ServerProcess, nonce: str) -> str:
    return (f"{node.url}/v2/token?nonce={nonce}&scope=repository%3Alibrary%2Fpushed%3Apush%2Cpull"
            f"&service=corral&ts={int(time.time())}")


def signed(url: str, key: Ed25519PrivateKey) -> dict[str, str]:
    return {"Authorization": sign_challenge(key, token_request_data(url))}


def bearer(node: ServerProcess, key: Ed25519PrivateKey) -> dict[str, str]:
    url = token_url(node, secrets.token_hex(8))
    answer = httpx.get(url, headers=signed(url, key), timeout=30)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_an_upload_started_on_one_node_is_finished_on_another(
        nodes: tuple[ServerProcess, ServerProcess, str], tmp_path: Path) -> None:
    a, b, url = nodes
    key = Ed25519PrivateKey.generate()
    authorize(tmp_path / "shared-models", key)
    auth = {a.port: bearer(a, key), b.port: bearer(b, key)}
    data = random.Random(2).randbytes(3_000_000)

    def patch(node: ServerProcess, location: str, start: int, end: int) -> httpx.Response:
        return httpx.patch(node.url + httpx.URL(location).path, content=data[start:end], timeout=30,
                           headers={**auth[node.port], "Content-Range": f"{start}-{end - 1}"})

    started = httpx.post(a.url + UPLOADS, headers=auth[a.port], timeout=30)
    assert started.status_code == 202
    location = started.headers["Location"]
    assert patch(a, location, 0, 1_000_000).headers["Range"] == "0-999999"
    status = httpx.get(b.url + httpx.URL(location).path, headers=auth[b.port], timeout=30)
    assert status.status_code == 204 and status.headers["Range"] == "0-999999"  # B sees what A wrote
    assert patch(b, location, 1_000_000, 2_000_000).headers["Range"] == "0-1999999"
    assert patch(a, location, 2_000_000, 2_500_000).headers["Range"] == "0-2499999"  # A again, after B wrote
    finished = httpx.put(b.url + httpx.URL(location).path, params={"digest": sha(data)}, content=data[2_500_000:],
                         headers={**auth[b.port], "Content-Range": f"2500000-{len(data) - 1}"}, timeout=30)
    assert finished.status_code == 201, finished.text
    assert query(url, "SELECT size, state FROM blobs WHERE digest = :d", d=sha(data)) == [(len(data), "verified")]
    assert query(url, "SELECT count(*) FROM upload_sessions") == [(0,)]
    for node in (a, b):
        blob = httpx.get(f"{node.url}/v2/library/pushed/blobs/{sha(data)}", timeout=30)
        assert blob.status_code == 200 and blob.content == data
    gone = patch(a, location, 0, 10)  # finished on B: unknown on A too
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


def test_tokens_hold_on_every_node_and_a_nonce_is_used_once_in_the_cluster(
        nodes: tuple[ServerProcess, ServerProcess, str], tmp_path: Path) -> None:
    a, b, url = nodes
    key = Ed25519PrivateKey.generate()
    authorize(tmp_path / "shared-models", key)
    from_a = bearer(a, key)
    assert httpx.post(b.url + UPLOADS, headers=from_a, timeout=30).status_code == 202  # A's token, on B
    assert query(url, "SELECT count(*) FROM issued_tokens") == [(1,)]
    assert from_a["Authorization"].split()[1] not in str(query(url, "SELECT token_hash FROM issued_tokens"))

    # behind a load balancer both nodes answer one address: the client signs that, and a replay
    # reaches the other node with the same Host
    signed_url = token_url(a, secrets.token_hex(8))
    headers = {**signed(signed_url, key), "Host": f"127.0.0.1:{a.port}"}
    assert httpx.get(signed_url, headers=headers, timeout=30).status_code == 200
    replayed = httpx.get(signed_url.replace(a.url, b.url), headers=headers, timeout=30)
    assert replayed.status_code == 401 and "nonce already used" in replayed.text

    forged = {"Authorization": "Bearer " + secrets.token_urlsafe(32)}
    assert httpx.post(b.url + UPLOADS, headers=forged, timeout=30).status_code == 401
