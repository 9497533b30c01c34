"""Cluster mode with real processes: two `corral serve` nodes on one PostgreSQL catalogue and one
shared models folder, Debian's docker-registry upstream. Starting, killing (-9) and restarting a
node never drops a catalogue row; every node serves every blob; one node at a time has the
background duty, and it moves when its holder dies; the status lists the nodes and their state.
What must not run beside a cluster is refused with one line and changes nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.catalogue import query
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, base_env, free_port, run_cli, start_server, wait_until
from tests.support.tiny_upstream import TinyUpstream, start_tiny_upstream

HEARTBEAT = 0.3  # seconds: a node is stale 3 heartbeats after its last renewal


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyUpstream]:
    upstream = start_tiny_upstream(tmp_path_factory.mktemp("upstream"))
    yield upstream
    upstream.registry.stop()


def node_env(shared: Path, database_url: str, name: str, upstream: TinyUpstream) -> dict[str, str]:
    return {"OLLAMA_MODELS": str(shared), "CORRAL_DATABASE_URL": database_url, "CORRAL_CLUSTER": "1",
            "CORRAL_NODE_NAME": name, "CORRAL_OWNER_HEARTBEAT": f"{HEARTBEAT}s", "CORRAL_OFFLINE": "0",
            "CORRAL_UPSTREAM": upstream.registry.url}


def cluster_status(server: ServerProcess) -> dict:
    return httpx.get(f"{server.url}/api/corral/status", timeout=30).json()["cluster"]


def states(server: ServerProcess) -> dict[str, str]:
    return {n["name"]: n["state"] for n in cluster_status(server)["nodes"]}


def rows(url: str) -> tuple[list[tuple], ...]:
    """Everything the catalogue knows about models: what a node must never drop."""
    return (query(url, "SELECT name_key, manifest_digest FROM tags ORDER BY name_key"),
            query(url, "SELECT digest, size, state FROM blobs ORDER BY digest"),
            query(url, "SELECT digest FROM manifests ORDER BY digest"),
            query(url, "SELECT manifest_digest, position, blob_digest FROM manifest_layers ORDER BY 1, 2"))


def listed(server: ServerProcess) -> list[str]:
    return [m["name"] for m in httpx.get(f"{server.url}/api/tags", timeout=30).json()["models"]]


def test_two_nodes_share_one_catalogue_and_store_through_kills_and_restarts(
        postgres: PostgresServer, tmp_path: Path, upstream: TinyUpstream) -> None:
    url = postgres.new_database()
    shared = tmp_path / "shared-models"
    a = start_server(tmp_path / "a", node_env(shared, url, "a", upstream))
    b = None
    try:
        pulled = run_cli(a, "pull", upstream.model)
        assert pulled.returncode == 0, pulled.stderr
        before = rows(url)
        assert before[0] == [(f"registry.ollama.ai/library/{upstream.model}:latest", before[2][0][0])]
        gets = upstream.blob_gets()

        b = start_server(tmp_path / "b", node_env(shared, url, "b", upstream))
        assert rows(url) == before
        for node in (a, b):
            assert listed(node) == [f"{upstream.model}:latest"]
            assert upstream.pulled_weights(node, tmp_path / f"client-{node.port}") == upstream.weights
        assert states(a) == states(b) == {"a": "live", "b": "live"}
        assert (cluster_status(a)["on_duty"], cluster_status(b)["on_duty"]) == (True, False)

        a.stop(signal.SIGKILL)
        assert rows(url) == before
        wait_until(lambda: states(b)["a"] == "stale")
        wait_until(lambda: cluster_status(b)["on_duty"])  # the duty moved to the live node
        assert upstream.pulled_weights(b, tmp_path / "client-b-alone") == upstream.weights

        a = start_server(tmp_path / "a", node_env(shared, url, "a", upstream))
        assert "replaced the row of this node's previous run" in a.log()
        assert rows(url) == before
        assert states(b) == {"a": "live", "b": "live"}  # the dead run's row is gone, not listed twice
        assert not cluster_status(a)["on_duty"]  # b keeps the duty
        for node in (a, b):
            assert upstream.pulled_weights(node, tmp_path / f"again-{node.port}") == upstream.weights
        assert upstream.blob_gets() == gets  # every node served every blob from the shared store
        page = httpx.get(f"{a.url}/corral", timeout=30).text
        assert "a (this node)" in page and "<td>live</td>" in page
    finally:
        for node in (a, b):
            if node is not None:
                node.stop()
    assert rows(url) == before
    assert query(url, "SELECT name FROM nodes") == []  # clean stops take the rows away


def serve_refused(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `corral serve` expecting it to stop by itself (a timeout here means it started)."""
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "registry.cli", "serve"], env=base_env(root, free_port(), env),
                          capture_output=True, text=True, timeout=60)


def test_what_cannot_join_a_cluster_is_refused_with_one_line_and_changes_nothing(
        postgres: PostgresServer, tmp_path: Path, upstream: TinyUpstream) -> None:
    sqlite = serve_refused(tmp_path / "sqlite", {"CORRAL_CLUSTER": "1"})
    assert (sqlite.returncode, sqlite.stderr.splitlines()) == (2, [
        "Error: CORRAL_CLUSTER: cluster mode needs a PostgreSQL catalogue every node reaches "
        "(CORRAL_DATABASE_URL=postgresql+asyncpg://…); an SQLite catalogue is one server's"])

    url = postgres.new_database()
    shared = tmp_path / "shared-models"
    a = start_server(tmp_path / "a", node_env(shared, url, "a", upstream))
    try:
        assert run_cli(a, "pull", upstream.model).returncode == 0
        before = rows(url)
        refusals = {
            "the same node again": (node_env(shared, url, "a", upstream),
                                    f"corral: the models folder {shared} is in use by another corral node named a "
                                    f"(pid {a.process.pid}, http://127.0.0.1:{a.port}, since "),
            "another folder": (node_env(tmp_path / "elsewhere", url, "c", upstream),
                               f"corral: the models folder {tmp_path / 'elsewhere'} is not the store the nodes on "
                               f"this catalogue share: it has no corral-store.id, the catalogue's nodes share store "),
            "a single server": ({"OLLAMA_MODELS": str(tmp_path / "single"), "CORRAL_DATABASE_URL": url},
                                f"corral: the catalogue {url} is in use by 1 corral cluster node (node a, pid "
                                f"{a.process.pid} on "),
            "a single server on the folder": ({"OLLAMA_MODELS": str(shared)},
                                              f"corral: the models folder {shared} is in use by corral cluster "
                                              "nodes (CORRAL_CLUSTER=1)"),
        }
        for case, (env, start) in refusals.items():
            refused = serve_refused(tmp_path / case.replace(" ", "-"), env)
            assert refused.returncode == 1, (case, refused.stderr)
            assert len(refused.stderr.splitlines()) == 1, (case, refused.stderr)
            assert refused.stderr.startswith(start), (case, refused.stderr)
        assert rows(url) == before
        assert [name for (name,) in query(url, "SELECT name FROM nodes")] == ["a"]
        assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["corral.lock", "nodes"]  # no blobs
    finally:
        a.stop()

    single = start_server(tmp_path / "single", {"OLLAMA_MODELS": str(tmp_path / "single"), "CORRAL_DATABASE_URL": url,
                                                "CORRAL_OWNER_HEARTBEAT": "1h"})
    try:
        refused = serve_refused(tmp_path / "late-node", node_env(shared, url, "a", upstream))
        assert refused.returncode == 1
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"corral: the catalogue {url} is owned by a corral server outside cluster mode "
                               f"(pid {single.process.pid} on ")
    finally:
        single.stop()
