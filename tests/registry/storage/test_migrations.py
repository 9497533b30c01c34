"""Alembic migrations, on SQLite and PostgreSQL: from an empty database, and from every earlier
revision with data kept; on PostgreSQL, servers migrating at once take turns."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from registry.storage.db import MIGRATION_LOCK, alembic_config, upgrade_database
from tests.support.cache import wait_for
from tests.support.catalogue import execute, query, table_names
from tests.support.postgres import both_databases


def revisions() -> list[str]:
    """Revision ids from first to head."""
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused.db"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


ALL_REVISIONS = revisions()
A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
SEED = [
    ("insert into blobs (digest, size, media_type, state, created_at, last_access) "
     "values (:a, :big, 'application/vnd.ollama.image.model', 'verified', 1, 1)"),
    ("insert into manifests (digest, media_type, raw, created_at) "
     "values (:b, 'application/vnd.docker.distribution.manifest.v2+json', :raw, 1)"),
    ("insert into manifest_layers (manifest_digest, position, blob_digest, media_type, size) "
     "values (:b, 0, :a, 'application/vnd.ollama.image.model', :big)"),
    ("insert into tags (name_key, host, namespace, model, tag, manifest_digest, created_at, modified_at, pinned) "
     "values ('registry.ollama.ai/library/m:latest', 'registry.ollama.ai', 'library', 'm', 'latest', "
     ":b, 1, 1764547200.123456, :pinned)"),
]
BIG = 5 * 2**30  # past 2^31: sizes are 64-bit on both engines


@both_databases
async def test_upgrade_from_empty(database_url: str) -> None:
    await upgrade_database(database_url)
    expected = {"blobs", "manifests", "manifest_layers", "tags", "version_gates", "nodes", "alembic_version"}
    assert expected <= table_names(database_url)
    assert query(database_url, "select version_num from alembic_version") == [(ALL_REVISIONS[-1],)]


@both_databases
@pytest.mark.parametrize("start", ALL_REVISIONS)
async def test_upgrade_keeps_data_from_each_revision(database_url: str, start: str) -> None:
    await upgrade_database(database_url, start)
    for statement in SEED:
        execute(database_url, statement, a=A, b=B, big=BIG, raw=b"{}", pinned=True)
    await upgrade_database(database_url)
    assert query(database_url, "select size, state from blobs") == [(BIG, "verified")]
    assert query(database_url, "select raw from manifests") == [(b"{}",)]
    assert query(database_url, "select name_key, pinned, modified_at from tags") == [
        ("registry.ollama.ai/library/m:latest", True, 1764547200.123456)
    ]
    assert query(database_url, "select count(*) from manifest_layers") == [(1,)]


@both_databases
async def test_upgrade_is_idempotent(database_url: str) -> None:
    await upgrade_database(database_url)
    await upgrade_database(database_url)
    assert "tags" in table_names(database_url)


async def test_a_migrated_catalogue_is_already_in_wal_mode(tmp_path: Path) -> None:
    """So servers opening it together never race to switch it (one of them would fail at once)."""
    db = tmp_path / "corral.db"
    await upgrade_database(f"sqlite+aiosqlite:///{db}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


UPGRADE = """
import asyncio, logging, sys
from registry.storage.db import upgrade_database
logging.basicConfig(level=logging.INFO, format="%(message)s")
asyncio.run(upgrade_database(sys.argv[1]))
"""


WAITING_FOR_LOCKS = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                     "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


@pytest.mark.parametrize("database_kind", ["postgresql"], indirect=True)
async def test_a_server_migrating_postgresql_waits_for_the_one_migrating_now(database_url: str) -> None:
    """The migration lock held elsewhere (as by a server migrating right now): an upgrade waits,
    says so, and runs once the lock is free; several started together then all succeed."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            waiting = [await asyncio.create_subprocess_exec(sys.executable, "-c", UPGRADE, database_url,
                                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                       for _ in range(3)]

            async def all_waiting() -> bool:
                return len(query(database_url, WAITING_FOR_LOCKS)) == len(waiting)

            await wait_for(all_waiting)
            assert "alembic_version" not in table_names(database_url)
            await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            outputs = [(await process.communicate())[0].decode() for process in waiting]
    finally:
        await engine.dispose()
    assert [process.returncode for process in waiting] == [0] * 3, outputs
    assert all("waiting for another corral server to finish migrating the catalogue" in out for out in outputs)
    assert sum("Running upgrade  -> 0001" in out for out in outputs) == 1, outputs  # the others found it done
    assert query(database_url, "select version_num from alembic_version") == [(ALL_REVISIONS[-1],)]
