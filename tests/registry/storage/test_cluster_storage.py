"""The storage side of cluster mode, in process: the models folder's locks, the nodes' rows, the
shared store's identity, the background duty lock, and a single server and a cluster excluding
each other on one catalogue."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.storage.db import DUTY_LOCK, make_engine, upgrade_database
from registry.storage.duty import DutyLock
from registry.storage.nodes import FORGET_AFTER, NodeRecord, NodeRegistration, read_nodes
from registry.storage.owner import CatalogueInUse
from registry.storage.ownership import Ownership
from registry.storage.shared_store import STORE_ID_NAME, NotTheSharedStore, check_shared_store
from registry.storage.store_lock import StoreInUse, StoreLock
from tests.support.catalogue import execute, query

on_postgresql = pytest.mark.parametrize("database_kind", ["postgresql"], indirect=True)


def test_nodes_share_the_folder_each_under_its_own_name_and_exclude_a_single_server(tmp_path: Path) -> None:
    models = tmp_path / "models"
    a = StoreLock.acquire_node(models, "a", "http://a:11434")
    b = StoreLock.acquire_node(models, "b", "http://b:11434")
    try:
        with pytest.raises(StoreInUse) as twin:
            StoreLock.acquire_node(models, "a", "http://a2:11434")
        assert str(twin.value).startswith(f"the models folder {models} is in use by another corral node named a "
                                          f"(pid {os.getpid()}, http://a:11434, since ")
        with pytest.raises(StoreInUse) as single:
            StoreLock.acquire(models, "http://single:11434")
        assert str(single.value) == f"the models folder {models} is in use by corral cluster nodes (CORRAL_CLUSTER=1)"
    finally:
        a.release()
    StoreLock.acquire_node(models, "a", "http://a3:11434").release()  # a's name is free again
    b.release()
    alone = StoreLock.acquire(models, "http://single:11434")  # the last node gone: a single server may start
    try:
        with pytest.raises(StoreInUse) as node:
            StoreLock.acquire_node(models, "c", "http://c:11434")
        assert str(node.value).startswith(f"the models folder {models} is in use by a corral server outside "
                                          f"cluster mode (pid {os.getpid()}, http://single:11434, since ")
    finally:
        alone.release()


@pytest.fixture
async def catalogue(database_url: str) -> AsyncIterator[str]:
    await upgrade_database(database_url)
    yield database_url


def node(name: str, folder: Path, url: str = "http://n:11434") -> NodeRecord:
    return NodeRecord.for_this_process(name, folder, url)


@on_postgresql
async def test_a_node_registers_renews_and_replaces_its_own_dead_runs(catalogue: str, tmp_path: Path) -> None:
    engine = make_engine(catalogue)
    try:
        now = time.time()
        execute(catalogue, "INSERT INTO nodes VALUES ('dead-a', 'a', :host, 1, 'http://old', '/m', 1, :hb, :exp)",
                host=socket.gethostname(), hb=now - 5, exp=now + 60)  # looks live, but a's lock is free: dead
        execute(catalogue, "INSERT INTO nodes VALUES ('gone', 'x', 'h', 1, 'http://x', '/m', 1, 1, :exp)",
                exp=now - FORGET_AFTER - 1)
        execute(catalogue, "INSERT INTO nodes VALUES ('crashed', 'y', 'h', 1, 'http://y', '/m', 1, 1, :exp)",
                exp=now - 1)
        me = NodeRegistration(engine, node("a", tmp_path), interval=5)
        await me.register()
        nodes = {n.id: n for n in await read_nodes(engine)}
        assert set(nodes) == {me.me.id, "crashed"}  # the stale one stays listed until a day past its expiry
        assert nodes[me.me.id].state(time.time()) == "live" and nodes["crashed"].state(time.time()) == "stale"
        execute(catalogue, "DELETE FROM nodes WHERE id = :id", id=me.me.id)  # as if dropped while stalled
        assert await me.renew()
        ((expires,),) = query(catalogue, "SELECT expires_at FROM nodes WHERE id = :id", id=me.me.id)
        assert expires >= time.time() + 14
        await me.release()
        assert [row[0] for row in query(catalogue, "SELECT id FROM nodes")] == ["crashed"]
    finally:
        await engine.dispose()


@on_postgresql
async def test_a_live_node_of_the_same_name_on_another_host_is_refused(catalogue: str, tmp_path: Path) -> None:
    """Only possible where locks do not reach across hosts: the rows catch the duplicate name."""
    execute(catalogue, "INSERT INTO nodes VALUES ('other', 'a', 'elsewhere', 7, 'http://e:1', '/m', 1, :hb, :exp)",
            hb=time.time(), exp=time.time() + 60)
    engine = make_engine(catalogue)
    try:
        with pytest.raises(CatalogueInUse, match=r"^another corral node named a is live on this catalogue "
                                                 r"\(node a, pid 7 on elsewhere, http://e:1, last heartbeat "):
            await NodeRegistration(engine, node("a", tmp_path), interval=5).register()
    finally:
        await engine.dispose()


@on_postgresql
async def test_the_first_node_records_the_shared_store_and_others_must_hold_it(catalogue: str,
                                                                              tmp_path: Path) -> None:
    engine = make_engine(catalogue)
    shared, other = tmp_path / "shared", tmp_path / "other"
    try:
        ids = await asyncio.gather(*(check_shared_store(engine, shared) for _ in range(4)))  # racing first nodes
        assert len(set(ids)) == 1 and (shared / STORE_ID_NAME).read_text().strip() == ids[0]
        assert query(catalogue, "SELECT store_id FROM shared_store") == [(ids[0],)]
        with pytest.raises(NotTheSharedStore, match=f"it has no {STORE_ID_NAME}, the catalogue's nodes share store "
                                                    f"{ids[0]}; give every node the same shared models folder"):
            await check_shared_store(engine, other)
        other.mkdir()
        (other / STORE_ID_NAME).write_text("f" * 32)
        with pytest.raises(NotTheSharedStore, match=f"it holds store {'f' * 32}"):
            await check_shared_store(engine, other, record=False)
    finally:
        await engine.dispose()


@on_postgresql
async def test_one_node_at_a_time_holds_the_duty_and_a_lost_session_frees_it(catalogue: str) -> None:
    engines = [make_engine(catalogue) for _ in range(2)]
    first, second = DutyLock(engines[0]), DutyLock(engines[1])
    try:
        assert await first.try_take() and first.held
        assert not await second.try_take()
        assert await first.still_held()
        await first.release()
        assert await second.try_take() and not await first.try_take()
        # the database ends the holder's session (a crashed node, a cut connection): the lock goes with it
        execute(catalogue, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                           "AND objid::text::bigint = :key & 4294967295 AND granted", key=DUTY_LOCK)
        assert not await second.still_held() and not second.held
        assert await first.try_take()
    finally:
        for lock in (first, second):
            await lock.release()
        for engine in engines:
            await engine.dispose()


@on_postgresql
async def test_a_single_server_and_a_cluster_exclude_each_other(database_url: str, tmp_path: Path) -> None:
    joined = await Ownership.join(tmp_path / "shared", database_url, node("a", tmp_path / "shared"), heartbeat=10)
    try:
        with pytest.raises(CatalogueInUse, match=r"is in use by 1 corral cluster node \(node a, pid "):
            await Ownership.take(tmp_path / "single", database_url, "http://s:1", heartbeat=10, default_database=None)
        assert query(database_url, "SELECT * FROM catalogue_owner") == []  # the single server's claim withdrawn
    finally:
        await joined.release()
    single = await Ownership.take(tmp_path / "single", database_url, "http://s:1", heartbeat=10,
                                  default_database=None)
    try:
        with pytest.raises(CatalogueInUse, match=r"is owned by a corral server outside cluster mode \(pid "):
            await Ownership.join(tmp_path / "shared", database_url, node("a", tmp_path / "shared"), heartbeat=10)
        assert query(database_url, "SELECT * FROM nodes") == []
    finally:
        await single.release()
    StoreLock.acquire_node(tmp_path / "shared", "a", "http://a:1").release()  # the refused join let go of the folder


START_AT = """
import asyncio, sys, time
from pathlib import Path
from registry.storage.nodes import NodeRecord
from registry.storage.owner import CatalogueInUse
from registry.storage.ownership import Ownership

async def main(kind, folder, url, at):
    await asyncio.sleep(max(0.0, at - time.time()))
    try:
        if kind == "node":
            me = NodeRecord.for_this_process("a", Path(folder), "http://a:1")
            ownership = await Ownership.join(Path(folder), url, me, heartbeat=10)
        else:
            ownership = await Ownership.take(Path(folder), url, "http://s:1", heartbeat=10, default_database=None)
    except CatalogueInUse:
        print("refused")
        return
    print("admitted", flush=True)
    await asyncio.sleep(1.0)  # hold it while the other one decides
    await ownership.release()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
"""


@on_postgresql
def test_a_node_and_a_single_server_starting_at_once_are_never_both_admitted(catalogue: str, tmp_path: Path) -> None:
    """Each writes its row, then looks for the other's: whatever the interleaving, not both run."""
    for _ in range(3):
        at = time.time() + 1.5  # both start at this instant
        processes = [subprocess.Popen([sys.executable, "-c", START_AT, kind, str(tmp_path / kind), catalogue, str(at)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for kind in ("node", "single")]
        outcomes = [process.communicate(timeout=60) for process in processes]
        said = sorted(out.strip() for out, _ in outcomes)
        assert said in (["admitted", "refused"], ["refused", "refused"]), outcomes
