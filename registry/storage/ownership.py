"""This server's hold on its store, taken before it changes anything and kept until it stops.

Taking it (`take`) is the first step of startup, in an order that lets a refused server leave no trace:

1. the models folder's lock (`store_lock`): a second server on the same folder stops here;
2. the old default catalogue copied into the folder (`old_catalogue`), now that no other server
   on this folder can be doing the same;
3. the catalogue's owner row (`owner`): claimed before migrating when the catalogue has the
   table, so a refused server does not migrate a catalogue another server is using; migrated
   first when it is too old to have one (no current corral can be using it then); given up
   again if live cluster nodes share the catalogue;
4. the heartbeat, in the background until `release`. Should it find the row taken by another
   server (this one stalled past its promised expiry), it sets `lost`: the server must stop.

A node of a cluster (CORRAL_CLUSTER) joins instead (`join`): the folder's lock shared and its own
node lock, refused before migrating if a single server owns the catalogue, the migrations (one
node at a time), the shared store's identity checked (`shared_store`), then its row in `nodes`
(`nodes`), renewed by the same heartbeat; no node ever takes another's place, so `lost` stays unset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.storage.db import ensure_sqlite_dir, make_engine, upgrade_database
from registry.storage.nodes import NodeRecord, NodeRegistration, refuse_if_clustered, refuse_if_owned
from registry.storage.old_catalogue import adopt_old_catalogue
from registry.storage.owner import OwnerClaim, OwnerRecord
from registry.storage.shared_store import check_shared_store
from registry.storage.store_lock import StoreLock

NEW_CATALOGUE_ATTEMPTS = 10  # a catalogue another server is creating: how long to wait for it
NEW_CATALOGUE_RETRY = 0.5

log = logging.getLogger("corral.owner")


class Ownership:
    """The lock and the claim (or, for a node of a cluster, its row), held; built by `take` or `join`."""

    def __init__(self, lock: StoreLock, claim: OwnerClaim | NodeRegistration, engine: AsyncEngine) -> None:
        self._lock = lock
        self._claim = claim
        self._engine = engine  # its own, so the claim outlives the server's engine at shutdown
        self.node = claim.me if isinstance(claim, NodeRegistration) else None  # this node, in cluster mode
        self.lost = asyncio.Event()
        self._released = False
        self._heartbeat = asyncio.create_task(self._renew_forever(), name="corral owner heartbeat")

    @classmethod
    async def take(cls, models: Path, database_url: str, listen_url: str, *, heartbeat: float,
                   default_database: Path | None) -> Ownership:
        """Lock the folder, adopt the old catalogue, migrate and claim the catalogue, in that order.

        `default_database` is the catalogue file inside `models` when the URL names no other; only
        then is an old default catalogue adopted. Raises StoreInUse or CatalogueInUse, having
        changed nothing, when another server holds either.
        """
        lock = await asyncio.to_thread(StoreLock.acquire, models, listen_url)
        engine: AsyncEngine | None = None
        claimed: OwnerClaim | None = None
        try:
            if default_database is not None:
                await asyncio.to_thread(adopt_old_catalogue, models, default_database)
            ensure_sqlite_dir(database_url)
            engine = make_engine(database_url)
            me = await asyncio.to_thread(OwnerRecord.for_this_process, models, listen_url)
            claim = OwnerClaim(engine, me, heartbeat)
            if not await claim.table_exists():
                await _migrate_new_catalogue(database_url, claim)
            await claim.claim()
            claimed = claim
            await refuse_if_clustered(engine)
            await upgrade_database(database_url)  # nothing left to do when the catalogue was new
        except BaseException:
            if claimed is not None:
                with contextlib.suppress(SQLAlchemyError, OSError):
                    await claimed.release()
            if engine is not None:
                await engine.dispose()
            lock.release()
            raise
        return cls(lock, claim, engine)

    @classmethod
    async def join(cls, models: Path, database_url: str, me: NodeRecord, *, heartbeat: float) -> Ownership:
        """Take this node's place in the cluster: lock, migrate, check the shared store, register.

        Raises StoreInUse, CatalogueInUse or NotTheSharedStore when this node may not run.
        """
        lock = await asyncio.to_thread(StoreLock.acquire_node, models, me.name, me.advertise_url)
        engine: AsyncEngine | None = None
        try:
            engine = make_engine(database_url)
            await refuse_if_owned(engine)  # both before migrating: a refused node changes nothing
            await check_shared_store(engine, models, record=False)
            await upgrade_database(database_url)
            await check_shared_store(engine, models)
            registration = NodeRegistration(engine, me, heartbeat)
            await registration.register()
        except BaseException:
            if engine is not None:
                await engine.dispose()
            lock.release()
            raise
        return cls(lock, registration, engine)

    async def release(self) -> None:
        """Stop the heartbeat, clear the owner row (unless another server has it now) or this
        node's row, unlock."""
        if self._released:
            return
        self._released = True
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        if not self.lost.is_set():
            try:
                await self._claim.release()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not clear this server's claim on the catalogue (it expires by itself): %s", exc)
        await self._engine.dispose()
        self._lock.release()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._claim.interval)
            try:
                kept = await self._claim.renew()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not renew this server's claim on the catalogue: %s", exc)
                continue
            if not kept:
                log.error("another corral server took over the catalogue while this one was not renewing "
                          "its claim; stopping")
                self.lost.set()
                return


async def _migrate_new_catalogue(database_url: str, claim: OwnerClaim) -> None:
    """Create the tables of a catalogue too new (or too old) to name an owner yet.

    Two servers started at the same moment on one new catalogue both get here; SQLite lets one
    migrate and the other fail (a table that appeared meanwhile, or the database locked while the
    other writes). That failure is a lost race, not an error: once the other's migration is in,
    the owner table exists and the claim that follows decides who serves. Only a failure that
    persists after the other had time to finish is raised.
    """
    for attempt in range(NEW_CATALOGUE_ATTEMPTS):
        try:
            await upgrade_database(database_url)
            return
        except SQLAlchemyError:
            if attempt == NEW_CATALOGUE_ATTEMPTS - 1:
                raise
        await asyncio.sleep(NEW_CATALOGUE_RETRY)
        if await claim.table_exists():
            log.info("another corral server created this catalogue at the same moment; the owner claim decides")
            return
