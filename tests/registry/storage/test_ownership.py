"""One server per store: the models folder's lock, the catalogue's owner row, and taking both in order."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.storage.db import make_engine, upgrade_database
from registry.storage.owner import STALE_HEARTBEATS, CatalogueInUse, OwnerClaim, OwnerRecord
from registry.storage.ownership import Ownership
from registry.storage.store_lock import StoreInUse, StoreLock
from tests.support.catalogue import execute, query
from tests.support.postgres import both_databases


def owner_rows(url: str) -> list[tuple]:
    return query(url, "SELECT owner_id, host, pid, models, expires_at FROM catalogue_owner")


def seed_owner(url: str, *, host: str, models: str, expires_at: float, pid: int = 4242) -> None:
    execute(url, "INSERT INTO catalogue_owner (slot, owner_id, host, pid, listen_url, models, started_at, "
                 "heartbeat_at, expires_at) VALUES (1, 'crashed', :host, :pid, 'http://10.0.0.9:11434', :models, 1, "
                 ":heartbeat_at, :expires_at)",
            host=host, pid=pid, models=models, heartbeat_at=expires_at - 30, expires_at=expires_at)


async def claims(url: str, folders: list[Path], interval: float = 10.0) -> list[OwnerClaim]:
    """One claim per folder, each on its own engine, as separate servers would have."""
    return [OwnerClaim(make_engine(url), OwnerRecord.for_this_process(folder, f"http://h:{n}"), interval)
            for n, folder in enumerate(folders)]


def read_together(*claimants: OwnerClaim) -> None:
    """Make each claimant's first look at the row wait for the others', so all decide on the same
    state and then write: the interleaving that a check-then-write claim would get wrong."""
    barrier = asyncio.Barrier(len(claimants))
    waited: set[OwnerClaim] = set()
    for claim in claimants:

        async def read_then_wait(read=claim._read, me=claim) -> OwnerRecord | None:
            try:
                row = await read()
            except BaseException:
                await barrier.abort()  # the others would wait for this one forever
                raise
            if me not in waited:
                waited.add(me)
                await barrier.wait()
            return row

        claim._read = read_then_wait  # type: ignore[method-assign]


async def dispose(*claimants: OwnerClaim) -> None:
    for claim in claimants:
        await claim._engine.dispose()


def test_the_lock_names_its_holder_and_passes_on_after_release(tmp_path: Path) -> None:
    models = tmp_path / "models"
    held = StoreLock.acquire(models, "http://127.0.0.1:11434")
    with pytest.raises(StoreInUse) as refused:
        StoreLock.acquire(models, "http://127.0.0.1:11435")
    assert str(refused.value).startswith(f"the models folder {models} is in use by another corral server "
                                         f"(pid {os.getpid()}, http://127.0.0.1:11434, since ")
    held.release()
    StoreLock.acquire(models, "http://127.0.0.1:11435").release()


@both_databases
async def test_two_servers_claiming_at_once_cannot_both_win(tmp_path: Path, database_url: str) -> None:
    await upgrade_database(database_url)
    first, second = await claims(database_url, [tmp_path / "a", tmp_path / "b"])
    read_together(first, second)
    try:
        results = await asyncio.gather(first.claim(), second.claim(), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["CatalogueInUse", "NoneType"]
        winner = first if results[0] is None else second
        assert [row[0] for row in owner_rows(database_url)] == [winner.me.owner_id]
    finally:
        await dispose(first, second)


@both_databases
async def test_a_stale_owner_is_taken_over_by_exactly_one_of_two(tmp_path: Path, database_url: str) -> None:
    await upgrade_database(database_url)
    seed_owner(database_url, host="elsewhere", models="/srv/models", expires_at=time.time() - 1)
    first, second = await claims(database_url, [tmp_path / "a", tmp_path / "b"])
    read_together(first, second)
    try:
        results = await asyncio.gather(first.claim(), second.claim(), return_exceptions=True)
        taken = [r for r in results if isinstance(r, OwnerRecord)]
        assert [r.owner_id for r in taken] == ["crashed"]
        assert sum(isinstance(r, CatalogueInUse) for r in results) == 1
    finally:
        await dispose(first, second)


@both_databases
async def test_a_live_owner_is_refused_and_named(tmp_path: Path, database_url: str) -> None:
    await upgrade_database(database_url)
    seed_owner(database_url, host=socket.gethostname(), models="/srv/other", expires_at=time.time() + 60)
    (claim,) = await claims(database_url, [tmp_path / "a"])
    try:
        with pytest.raises(CatalogueInUse) as refused:
            await claim.claim()
        assert str(refused.value).startswith(
            f"the catalogue {database_url} is in use by another corral server "
            f"(pid 4242 on {socket.gethostname()}, http://10.0.0.9:11434, models /srv/other, last heartbeat ")
        assert [row[0] for row in owner_rows(database_url)] == ["crashed"]
    finally:
        await dispose(claim)


@both_databases
async def test_the_previous_server_on_our_own_folder_is_taken_over_at_once(tmp_path: Path, database_url: str) -> None:
    """Its heartbeat may look fresh, but it held the folder's lock, which we now hold: it is gone."""
    await upgrade_database(database_url)
    folder = tmp_path / "a"
    seed_owner(database_url, host=socket.gethostname(), models=str(folder.resolve()), expires_at=time.time() + 60)
    (claim,) = await claims(database_url, [folder])
    try:
        assert (await claim.claim()).owner_id == "crashed"
        assert [row[0] for row in owner_rows(database_url)] == [claim.me.owner_id]
    finally:
        await dispose(claim)


@both_databases
async def test_renewing_pushes_the_expiry_and_notices_a_takeover(tmp_path: Path, database_url: str) -> None:
    await upgrade_database(database_url)
    (claim,) = await claims(database_url, [tmp_path / "a"], interval=5.0)
    try:
        await claim.claim()
        before = time.time()
        assert await claim.renew()
        assert owner_rows(database_url)[0][4] >= before + STALE_HEARTBEATS * 5.0
        execute(database_url, "UPDATE catalogue_owner SET owner_id = 'usurper'")
        assert not await claim.renew()
        await claim.release()
        assert [row[0] for row in owner_rows(database_url)] == ["usurper"]  # release leaves another's row alone
    finally:
        await dispose(claim)


async def test_taking_ownership_refused_by_the_folder_lock_changes_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    held = StoreLock.acquire(models, "http://127.0.0.1:1")
    try:
        with pytest.raises(StoreInUse):
            await Ownership.take(models, f"sqlite+aiosqlite:///{models / 'corral.db'}", "http://127.0.0.1:2",
                                 heartbeat=10, default_database=models / "corral.db")
        assert sorted(p.name for p in models.iterdir()) == ["corral.lock"]
    finally:
        held.release()


@both_databases
async def test_a_refused_claim_does_not_migrate_the_catalogue(tmp_path: Path, database_url: str) -> None:
    """With the owner table present, the claim comes before migrating: a refused server migrates nothing."""
    await upgrade_database(database_url)
    seed_owner(database_url, host="elsewhere", models="/srv/models", expires_at=time.time() + 60)
    execute(database_url, "UPDATE alembic_version SET version_num = '0003'")  # as if a migration were pending
    with pytest.raises(CatalogueInUse):
        await Ownership.take(tmp_path / "a", database_url, "http://127.0.0.1:2", heartbeat=10, default_database=None)
    assert query(database_url, "SELECT version_num FROM alembic_version") == [("0003",)]
    StoreLock.acquire(tmp_path / "a", "http://127.0.0.1:3").release()  # the refused take let go of the folder


@both_databases
async def test_a_fresh_catalogue_is_migrated_then_claimed_and_released_clean(tmp_path: Path, database_url: str) -> None:
    ownership = await Ownership.take(tmp_path / "a", database_url, "http://127.0.0.1:2", heartbeat=10,
                                     default_database=None)
    assert [row[2] for row in owner_rows(database_url)] == [os.getpid()]
    await ownership.release()
    assert owner_rows(database_url) == []
    StoreLock.acquire(tmp_path / "a", "http://127.0.0.1:3").release()


@both_databases
async def test_the_heartbeat_sets_lost_when_another_server_took_over(tmp_path: Path, database_url: str) -> None:
    ownership = await Ownership.take(tmp_path / "a", database_url, "http://127.0.0.1:2", heartbeat=0.05,
                                     default_database=None)
    try:
        execute(database_url, "UPDATE catalogue_owner SET owner_id = 'usurper', expires_at = :at", at=time.time() + 60)
        async with asyncio.timeout(10):
            await ownership.lost.wait()
    finally:
        await ownership.release()
    assert [row[0] for row in owner_rows(database_url)] == ["usurper"]


TAKE_AT = """
import asyncio, sys, time
from collections.abc import Callable
from pathlib import Path
from registry.storage.owner import CatalogueInUse
from registry.storage.ownership import Ownership

async def main(models, url, at):
    await asyncio.sleep(max(0.0, at - time.time()))
    try:
        ownership = await Ownership.take(Path(models), url, "http://127.0.0.1:1", heartbeat=10,
                                         default_database=None)
    except CatalogueInUse:
        print("refused")
        return
    print("owner", flush=True)
    await asyncio.sleep(1.0)  # hold it while the other one decides
    await ownership.release()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


@both_databases
def test_two_servers_starting_together_on_a_new_catalogue_give_one_owner_and_one_refusal(
        tmp_path: Path, new_database: Callable[[], str]) -> None:
    """Two processes find no tables and migrate at the same moment: the loser's failed migration
    (SQLite) or its wait for the winner's (PostgreSQL) ends as every refusal does (CatalogueInUse),
    never as a migration traceback."""
    for round_ in range(3):
        url = new_database()
        at = time.time() + 1.5  # both start their take at this instant
        processes = [
            subprocess.Popen([sys.executable, "-c", TAKE_AT, str(tmp_path / f"round{round_}" / folder), url,
                              str(at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for folder in ("a", "b")
        ]
        outcomes = [process.communicate(timeout=60) for process in processes]
        assert sorted(out.strip() for out, _ in outcomes) == ["owner", "refused"], outcomes
