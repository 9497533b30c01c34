"""Leases across the nodes of a cluster, with real processes: node B streams a blob to a slow
client while node A, on duty, prunes over its quota and is asked to delete the model; the blob
stays until B has sent it, and B's client gets every byte."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.model.manifest import MEDIA_MODEL
from tests.support.catalogue import query
from tests.support.digests import sha256_bytes as sha
from tests.support.docker_registry import DockerRegistry, push_model, start_registry
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, run_cli, start_server, wait_until

MB = 1_000_000
HEARTBEAT = 0.3
READ_CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DockerRegistry, bytes, bytes]]:
    """An upstream with "big" (24 MB, far more than loopback's socket buffers hold) and "small"."""
    registry = start_registry(tmp_path_factory.mktemp("upstream"))
    rng = random.Random(18)
    big, small = rng.randbytes(24 * MB), rng.randbytes(14 * MB)
    try:
        push_model(registry.url, "library/big", "latest", [(MEDIA_MODEL, big)])
        push_model(registry.url, "library/small", "latest", [(MEDIA_MODEL, small)])
        yield registry, big, small
    finally:
        registry.stop()


class StalledReader:
    """A client that has begun a download and stops reading; its small receive buffer (set before
    connecting, so no autotuning) keeps the server's send in progress."""

    def __init__(self, server: ServerProcess, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", server.port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += self.sock.recv(4096)
        head, self.body = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 "), head
        while len(self.body) < READ_CHUNK:
            self.body += self.sock.recv(READ_CHUNK)

    def finish(self) -> bytes:
        while chunk := self.sock.recv(1024 * 1024):
            self.body += chunk
        self.sock.close()
        return self.body


def node_env(shared: Path, database_url: str, name: str, upstream: str) -> dict[str, str]:
    return {"OLLAMA_MODELS": str(shared), "CORRAL_DATABASE_URL": database_url, "CORRAL_CLUSTER": "1",
            "CORRAL_NODE_NAME": name, "CORRAL_OWNER_HEARTBEAT": f"{HEARTBEAT}s", "CORRAL_OFFLINE": "0",
            "CORRAL_UPSTREAM": upstream, "CORRAL_MAX_CACHE": "40MB", "CORRAL_CACHE_HIGH_WATERMARK": "0.9",
            "CORRAL_CACHE_LOW_WATERMARK": "0.5"}


def tags(url: str) -> set[str]:
    return {row[0] for row in query(url, "SELECT name_key FROM tags")}


def test_a_prune_on_the_node_on_duty_keeps_a_blob_another_node_streams(
        postgres: PostgresServer, tmp_path: Path, weights: tuple[DockerRegistry, bytes, bytes]) -> None:
    registry, big, _ = weights
    url = postgres.new_database()
    shared = tmp_path / "shared-models"
    a = start_server(tmp_path / "a", node_env(shared, url, "a", registry.url))
    b = None
    try:
        assert httpx.get(f"{a.url}/api/corral/status", timeout=30).json()["cluster"]["on_duty"]
        b = start_server(tmp_path / "b", node_env(shared, url, "b", registry.url))
        assert run_cli(b, "pull", "big").returncode == 0
        reader = StalledReader(b, f"/v2/library/big/blobs/{sha(big)}")
        assert (sha(big),) in query(url, "SELECT digest FROM blob_leases")

        # 38 MB: over the high watermark; pulled on B so that only the prune asked for runs on A
        assert run_cli(b, "pull", "small").returncode == 0
        # B's pull leased small's blobs; their rows go within a heartbeat of the pull's end
        wait_until(lambda: query(url, "SELECT digest FROM blob_leases") == [(sha(big),)])
        pruned = run_cli(a, "prune")
        assert pruned.returncode == 0, pruned.stderr
        if "over the high watermark" in pruned.stdout:  # else A's background check (every 10 s) came first
            assert f"keep      big:latest: in use: {sha(big)[7:19]} is in use on another node" in pruned.stdout
        assert tags(url) == {"registry.ollama.ai/library/big:latest"}  # small went instead
        removed = run_cli(a, "rm", "big")  # the tag goes; the blob B streams stays, an orphan for later
        assert removed.returncode == 0, removed.stderr
        assert (shared / "blobs" / sha(big).replace(":", "-")).exists()

        assert reader.finish() == big  # every byte, while A pruned and deleted around it
    finally:
        for node in (a, b):
            if node is not None:
                node.stop()
    assert query(url, "SELECT digest FROM blob_leases") == []  # the rows went with their nodes'
