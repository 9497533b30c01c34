"""`corral serve` on a PostgreSQL catalogue, end to end with real processes: a model pulled through
Debian's docker-registry, listed, served, and all of it still there after a clean restart and
after kill -9; a second single-node server on the same catalogue is refused with one line."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.catalogue import query
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, base_env, free_port, run_cli, start_server
from tests.support.tiny_upstream import TinyUpstream, start_tiny_upstream


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyUpstream]:
    upstream = start_tiny_upstream(tmp_path_factory.mktemp("upstream"))
    yield upstream
    upstream.registry.stop()


def mirror(root: Path, upstream: TinyUpstream, database_url: str, **env: str) -> ServerProcess:
    return start_server(root, {"CORRAL_OFFLINE": "0", "CORRAL_UPSTREAM": upstream.registry.url,
                               "CORRAL_DATABASE_URL": database_url, **env})


def listed(server: ServerProcess) -> list[tuple[str, str]]:
    return [(m["name"], m["digest"]) for m in httpx.get(f"{server.url}/api/tags", timeout=30).json()["models"]]


def test_a_pulled_model_survives_a_restart_and_a_kill_on_postgresql(postgres: PostgresServer, tmp_path: Path,
                                                                     upstream: TinyUpstream) -> None:
    url = postgres.new_database()
    root = tmp_path / "corral"
    server = mirror(root, upstream, url)
    try:
        pulled = run_cli(server, "pull", upstream.model)
        assert pulled.returncode == 0, pulled.stderr
        models = listed(server)
        assert [name for name, _ in models] == [f"{upstream.model}:latest"]
        assert upstream.pulled_weights(server, tmp_path / "client") == upstream.weights
        assert query(url, "SELECT pid FROM catalogue_owner") == [(server.process.pid,)]
        assert query(url, "SELECT size FROM blobs WHERE digest = :d", d=upstream.digest) == [(3_000_000,)]
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert query(url, "SELECT * FROM catalogue_owner") == []  # a clean stop clears the claim
    gets = upstream.blob_gets()
    for stop in (signal.SIGKILL, signal.SIGTERM):
        server = mirror(root, upstream, url, CORRAL_OFFLINE="1")
        try:
            assert listed(server) == models
            assert upstream.pulled_weights(server, tmp_path / f"after-{stop.name}") == upstream.weights
        finally:
            server.stop(stop)
    assert "took over the catalogue from the previous server on this models folder" in server.log()
    assert upstream.blob_gets() == gets  # everything came from the store


def test_a_second_server_on_a_postgresql_catalogue_is_refused_with_one_line(postgres: PostgresServer,
                                                                             tmp_path: Path) -> None:
    url = postgres.new_database()
    first = start_server(tmp_path / "one", {"CORRAL_DATABASE_URL": url})
    try:
        second = subprocess.run([sys.executable, "-m", "registry.cli", "serve"], timeout=60, capture_output=True,
                                text=True, env=base_env(tmp_path / "two", free_port(), {"CORRAL_DATABASE_URL": url}))
        assert second.returncode == 1
        (line,) = second.stderr.splitlines()
        assert line.startswith(
            f"corral: the catalogue postgresql+asyncpg://corral@127.0.0.1:{postgres.port}/{url.rsplit('/', 1)[1]} "
            f"is in use by another corral server (pid {first.process.pid} on {socket.gethostname()}, {first.url}, ")
    finally:
        first.stop()
