"""Alembic migrations: from an empty database, and from every earlier revision with data kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from registry.storage.db import alembic_config, upgrade_database


def revisions(url: str) -> list[str]:
    """Revision ids from first to head."""
    script = ScriptDirectory.from_config(alembic_config(url))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def url_for(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}


async def test_upgrade_from_empty(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "corral.db"
    await upgrade_database(url_for(db))
    assert {"blobs", "manifests", "manifest_layers", "tags", "version_gates", "alembic_version"} <= tables(db)
    with sqlite3.connect(db) as conn:
        (head,) = conn.execute("select version_num from alembic_version").fetchone()
    assert head == revisions(url_for(db))[-1]


SEED = [
    "insert into blobs (digest, size, media_type, state, created_at, last_access) "
    "values ('sha256:" + "a" * 64 + "', 3, 'application/vnd.ollama.image.model', 'verified', 1, 1)",
    "insert into manifests (digest, media_type, raw, created_at) "
    "values ('sha256:" + "b" * 64 + "', 'application/vnd.docker.distribution.manifest.v2+json', x'7b7d', 1)",
    "insert into manifest_layers (manifest_digest, position, blob_digest, media_type, size) "
    "values ('sha256:" + "b" * 64 + "', 0, 'sha256:" + "a" * 64 + "', 'application/vnd.ollama.image.model', 3)",
    "insert into tags (name_key, host, namespace, model, tag, manifest_digest, created_at, modified_at, pinned) "
    "values ('registry.ollama.ai/library/m:latest', 'registry.ollama.ai', 'library', 'm', 'latest', "
    "'sha256:" + "b" * 64 + "', 1, 2, 1)",
]


ALL_REVISIONS = revisions("sqlite+aiosqlite:///unused.db")


@pytest.mark.parametrize("start", ALL_REVISIONS)
async def test_upgrade_keeps_data_from_each_revision(tmp_path: Path, start: str) -> None:
    db = tmp_path / "corral.db"
    await upgrade_database(url_for(db), start)
    with sqlite3.connect(db) as conn:
        for statement in SEED:
            conn.execute(statement)
    await upgrade_database(url_for(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("select size, state from blobs").fetchall() == [(3, "verified")]
        assert conn.execute("select raw from manifests").fetchall() == [(b"{}",)]
        assert conn.execute("select name_key, pinned, modified_at from tags").fetchall() == [
            ("registry.ollama.ai/library/m:latest", 1, 2.0)
        ]
        assert conn.execute("select count(*) from manifest_layers").fetchone() == (1,)


async def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    await upgrade_database(url_for(db))
    await upgrade_database(url_for(db))
    assert "tags" in tables(db)


async def test_a_migrated_catalogue_is_already_in_wal_mode(tmp_path: Path) -> None:
    """So servers opening it together never race to switch it (one of them would fail at once)."""
    db = tmp_path / "corral.db"
    await upgrade_database(url_for(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
