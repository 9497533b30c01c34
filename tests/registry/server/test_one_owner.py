"""One store, one owner, with real `corral serve` processes: a second server on the same port, models
folder or catalogue stops at once with one line and leaves the store as it was; a crashed owner's
catalogue is taken over; an upgraded install's catalogue is copied into the models folder."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
from alembic import command

from registry.storage.db import alembic_config
from tests.support.digests import sha256_bytes as sha
from tests.support.models import write_gguf
from tests.support.server import ServerProcess, base_env, free_port, start_server

DEFAULT_DATABASE = {"CORRAL_DATABASE_URL": ""}  # empty: the default, not the test helpers' explicit file


def serve_refused(root: Path, port: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `corral serve` expecting it to stop by itself (a timeout here means it started)."""
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "registry.cli", "serve"], env=base_env(root, port, env),
                          capture_output=True, text=True, timeout=60)


def create_model(server: ServerProcess, workdir: Path, name: str = "tiny") -> bytes:
    """A small GGUF model made through the API; returns its weights."""
    weights = write_gguf(workdir / f"{name}.gguf").read_bytes()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post(f"/api/blobs/{sha(weights)}", content=weights).status_code == 201
        done = client.post("/api/create", json={"model": name, "files": {"m.gguf": sha(weights)}, "stream": False})
        assert done.json() == {"status": "success"}, done.text
    return weights


def rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(query).fetchall()
    conn.close()
    return found


def catalogue(db: Path) -> tuple[list[tuple], ...]:
    return (rows(db, "SELECT name_key, manifest_digest FROM tags ORDER BY name_key"),
            rows(db, "SELECT digest, state, last_access FROM blobs ORDER BY digest"))


def listed(server: ServerProcess) -> list[tuple[str, str]]:
    tags = httpx.get(f"{server.url}/api/tags", timeout=30).json()["models"]
    return [(m["name"], m["digest"]) for m in tags]


def test_a_second_server_on_a_taken_port_stops_before_touching_its_store(tmp_path: Path) -> None:
    parent = tmp_path / "x"
    first = start_server(tmp_path / "first", {"OLLAMA_MODELS": str(parent / "a"), **DEFAULT_DATABASE,
                                              "CORRAL_OWNER_HEARTBEAT": "1h"})
    try:
        weights = create_model(first, tmp_path)
        before = listed(first)
        second = serve_refused(tmp_path / "second", first.port, {"OLLAMA_MODELS": str(parent / "b"),
                                                                 **DEFAULT_DATABASE})
        blob = httpx.get(f"{first.url}/v2/library/tiny/blobs/{sha(weights)}", timeout=30)
        assert blob.status_code == 200 and blob.content == weights
        assert listed(first) == before
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"corral: cannot listen on 127.0.0.1:{first.port}: address already in use"]
        assert sorted(p.name for p in parent.iterdir()) == ["a"]  # no b/, and no catalogue beside the folders
        assert (parent / "a" / "corral.db").is_file()
    finally:
        first.stop()
    other = start_server(tmp_path / "second", {"OLLAMA_MODELS": str(parent / "b"), **DEFAULT_DATABASE})
    other.stop()
    assert (parent / "b" / "corral.db").is_file() and not (parent / "corral.db").exists()


def test_a_second_server_on_the_same_models_folder_names_the_first_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    first = start_server(root, {"CORRAL_OWNER_HEARTBEAT": "1h"})
    try:
        create_model(first, tmp_path)
        stray = root / "models" / "blobs" / f"sha256-{'c' * 64}-ingest-0123456789abcdef"
        stray.write_bytes(b"an ingest a crash interrupted; removed at a server's startup")
        before = catalogue(root / "corral.db")
        files = sorted(p.name for p in (root / "models").rglob("*"))
        second = serve_refused(root, free_port(), {})
        assert stray.exists()
        assert catalogue(root / "corral.db") == before
        assert second.returncode == 1
        (line,) = second.stderr.splitlines()
        assert line.startswith(f"corral: the models folder {root / 'models'} is in use by another corral server "
                               f"(pid {first.process.pid}, {first.url}, since ")
        assert sorted(p.name for p in (root / "models").rglob("*")) == files
        assert rows(root / "corral.db", "SELECT pid FROM catalogue_owner") == [(first.process.pid,)]
    finally:
        first.stop()


def test_a_shared_catalogue_refuses_a_second_owner_until_the_first_is_gone(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    shared = {"CORRAL_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "CORRAL_OWNER_HEARTBEAT": "200ms"}
    first = start_server(tmp_path / "one", shared)
    try:
        second = serve_refused(tmp_path / "two", free_port(), shared)
        assert second.returncode == 1
        (line,) = second.stderr.splitlines()
        assert line.startswith(
            f"corral: the catalogue sqlite+aiosqlite:///{db} is in use by another corral server "
            f"(pid {first.process.pid} on {socket.gethostname()}, {first.url}, "
            f"models {(tmp_path / 'one' / 'models').resolve()}, last heartbeat ")
        assert not (tmp_path / "two" / "models" / "id_ed25519").exists()  # it stopped before making its key
    finally:
        first.stop(signal.SIGKILL)
    ((expires_at,),) = rows(db, "SELECT expires_at FROM catalogue_owner")
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)  # the dead owner's promise runs out
    third = start_server(tmp_path / "three", shared)
    try:
        assert "took over the catalogue from a server that stopped renewing its claim" in third.log()
        assert rows(db, "SELECT pid FROM catalogue_owner") == [(third.process.pid,)]
    finally:
        third.stop()
    assert third.process.returncode == 0
    assert rows(db, "SELECT * FROM catalogue_owner") == []  # a clean stop clears the claim


def test_a_server_whose_catalogue_was_taken_over_stops(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"CORRAL_OWNER_HEARTBEAT": "100ms"})
    try:
        with sqlite3.connect(tmp_path / "corral.db") as conn:
            conn.execute("UPDATE catalogue_owner SET owner_id = 'another', expires_at = ?", (time.time() + 60,))
        conn.close()
        assert server.process.wait(timeout=60) == 1
        assert "another corral server took over the catalogue" in server.log()
    finally:
        server.stop()


def test_the_old_default_catalogue_is_copied_into_the_models_folder(tmp_path: Path) -> None:
    """An install from before the move: its catalogue beside the models root, at schema 0003."""
    old = tmp_path / "corral.db"
    first = start_server(tmp_path, {"CORRAL_DATABASE_URL": f"sqlite+aiosqlite:///{old}"})
    try:
        create_model(first, tmp_path)
    finally:
        first.stop()
    command.downgrade(alembic_config(f"sqlite+aiosqlite:///{old}"), "0003")

    upgraded = start_server(tmp_path, DEFAULT_DATABASE)
    try:
        tags = httpx.get(f"{upgraded.url}/api/tags", timeout=30).json()
        assert [m["name"] for m in tags["models"]] == ["tiny:latest"]
        assert (f"copied the catalogue from its old place {old} into the models folder: "
                f"{tmp_path / 'models' / 'corral.db'}") in upgraded.log()
    finally:
        upgraded.stop()
