"""Reconciling a store other nodes are working in: with a grace period (cluster mode), what was
touched within it is another node's work in progress and stays; what is older is cleaned up as
a single server cleans up at startup. On both engines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.model.names import Digest
from registry.storage.catalog import Catalog
from registry.storage.db import make_engine, make_sessionmaker, upgrade_database
from registry.storage.leases import Leases
from registry.storage.reconcile import reconcile
from registry.storage.store import BlobStore
from tests.support.catalogue import execute, query
from tests.support.postgres import both_databases

pytestmark = both_databases
GRACE = 1.0


def digest(char: str) -> Digest:
    return Digest.parse("sha256:" + char * 64)


@pytest.fixture
async def catalog(database_url: str, tmp_path: Path) -> AsyncIterator[Catalog]:
    await upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        yield Catalog(make_sessionmaker(engine), BlobStore(tmp_path / "blobs"), Leases())
    finally:
        await engine.dispose()


def leftovers(catalog: Catalog, database_url: str, when: float, tag: str) -> dict[str, str]:
    """One of each thing reconcile may remove, dated `when`: a verified row without its file, an
    unrecorded file nothing needs, a partial file without progress, progress without its partial
    file, a file renamed aside by a prune. Their digests start with `tag`'s characters."""
    store, made = catalog.store, {}
    row, orphan, partial, fill, retired = (digest(c) for c in tag)
    execute(database_url, "INSERT INTO blobs (digest, size, state, created_at, last_access) "
                          "VALUES (:d, 3, 'verified', :t, :t)", d=str(row), t=when)
    store.path(orphan).write_bytes(b"orphan")
    store.partial_path(partial).write_bytes(b"part")
    execute(database_url, "INSERT INTO fills (digest, size, source, repository, segments, created_at, updated_at) "
                          "VALUES (:d, 3, 'http://up', 'library/m', '[[0, 3, 0]]', :t, :t)", d=str(fill), t=when)
    (store.root / f"{retired.filename}-retired-0123abcd").write_bytes(b"retired")
    made.update(row=str(row), orphan=str(orphan), partial=str(partial), fill=str(fill), retired=str(retired))
    return made


async def test_a_cluster_reconcile_leaves_what_was_touched_within_the_grace_period(
        catalog: Catalog, database_url: str) -> None:
    old = leftovers(catalog, database_url, time.time() - 10 * GRACE, "abcde")
    await asyncio.sleep(GRACE * 1.2)  # the files above are now older than the grace period
    fresh = leftovers(catalog, database_url, time.time(), "56789")

    report = await reconcile(catalog, catalog.sessions, noprune=False, grace=GRACE)
    assert report.dropped_rows == [old["row"]]
    assert report.removed_orphans == [old["orphan"]]
    assert report.removed_partials == [old["partial"]]
    assert report.dropped_fills == [old["fill"]]
    assert report.removed_retired == 1
    assert [d for (d,) in query(database_url, "SELECT digest FROM blobs")] == [fresh["row"]]
    assert [d for (d,) in query(database_url, "SELECT digest FROM fills")] == [fresh["fill"]]
    assert sorted(p.name for p in catalog.store.root.iterdir()) == sorted([
        Digest.parse(fresh["orphan"]).filename, f"{Digest.parse(fresh['partial']).filename}-partial",
        f"{Digest.parse(fresh['retired']).filename}-retired-0123abcd"])

    single = await reconcile(catalog, catalog.sessions, noprune=False)  # a single server owns everything
    assert (single.dropped_rows, single.removed_orphans, single.removed_partials, single.dropped_fills,
            single.removed_retired) == ([fresh["row"]], [fresh["orphan"]], [fresh["partial"]], [fresh["fill"]], 1)
    assert list(catalog.store.root.iterdir()) == []
