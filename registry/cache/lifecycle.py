"""The cache lifecycle of one server: reconcile at startup, then prune, scrub, keep-warm and the traffic
history in the background.

Its parts are built by the server before the application starts; `start` runs in the startup
hook — reconciliation first, before any request is served, then the background tasks — and
`stop` on shutdown, before the parts they use close.

In a cluster (a `DutyLock` given) that work is the duty of one node at a time: every node tries
for the lock at startup and then every `duty_interval`; the node that holds it reconciles (with
the cluster's grace period, see `storage.reconcile`) when it takes up the duty and every
`reconcile_interval` after, and runs prune, scrub and keep-warm. A node that loses the lock (its
database connection broke) stops them at once and tries again like the others. Every node, on duty
or not, updates its blob leases in the catalogue at the same pace, so the node on duty sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from registry.cache.history import History
from registry.cache.prune import Pruner
from registry.cache.scrub import Scrubber
from registry.config import Settings
from registry.mirror.keepwarm import KeepWarm
from registry.storage.catalog import Catalog
from registry.storage.duty import DutyLock
from registry.storage.reconcile import CLUSTER_GRACE, ReconcileReport, reconcile

log = logging.getLogger("corral.duty")


class Lifecycle:
    def __init__(self, settings: Settings, catalog: Catalog, pruner: Pruner, scrubber: Scrubber,
                 keep_warm: KeepWarm, history: History, duty: DutyLock | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.pruner = pruner
        self.scrubber = scrubber
        self.keep_warm = keep_warm
        self.history = history
        self.duty = duty  # None: a single server, which always does the work
        self.duty_interval = settings.owner_heartbeat
        self.reconcile_interval = CLUSTER_GRACE
        self.reconciled: ReconcileReport | None = None  # set by `start`, shown on the status page
        self._tasks: list[asyncio.Task[None]] = []  # the background work
        self._watch: asyncio.Task[None] | None = None  # cluster mode: tries for, and watches, the duty

    @property
    def on_duty(self) -> bool:
        """Whether this server runs the background work now."""
        return self.duty is None or self.duty.held

    async def start(self) -> None:
        if self.duty is None:
            self.reconciled = await reconcile(self.catalog, self.catalog.sessions, self.settings.noprune)
            self._start_work()
            return
        if await self.duty.try_take():
            await self._take_up_duty()
        self._watch = asyncio.create_task(self._watch_duty(), name="corral background duty")

    async def _take_up_duty(self) -> None:
        log.info("this node runs the cluster's background work now (reconcile, prune, scrub, keep-warm)")
        self.reconciled = await reconcile(self.catalog, self.catalog.sessions, self.settings.noprune,
                                          grace=CLUSTER_GRACE)
        self._start_work()
        self._spawn(self._reconcile_every_interval(), "reconcile")

    async def _watch_duty(self) -> None:
        assert self.duty is not None
        while True:
            await asyncio.sleep(self.duty_interval)
            await self._sync_leases()
            if self.duty.held:
                if not await self.duty.still_held():
                    log.warning("stopped the background work: another node may hold the duty now")
                    await self._stop_work()
                continue
            if not await self.duty.try_take():
                continue
            try:
                await self._take_up_duty()
            except Exception:
                log.exception("could not take up the background duty; handing it back")
                await self._stop_work()
                await self.duty.release()

    async def _sync_leases(self) -> None:
        """Show the other nodes which blobs this one uses now (`storage.cluster_leases`)."""
        try:
            await self.catalog.leases.sync(self.pruner.loaded_blobs())
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not update this node's blob leases in the catalogue: %s", exc)

    async def _reconcile_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
            try:
                self.reconciled = await reconcile(self.catalog, self.catalog.sessions, self.settings.noprune,
                                                  grace=CLUSTER_GRACE)
            except Exception:
                log.exception("reconcile failed; trying again in %.0fs", self.reconcile_interval)

    def _start_work(self) -> None:
        self._spawn(self.pruner.loop(), "pruner")
        self._spawn(self.history.loop(), "history")
        if self.settings.scrub_interval > 0:
            self._spawn(self.scrubber.loop(self.settings.scrub_interval), "scrubber")
        if self.keep_warm.names:
            self._spawn(self.keep_warm.loop(self.settings.sync_interval), "keep-warm")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=f"corral {name}"))

    async def _stop_work(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._stop_work()
        if self.duty is not None:
            await self.duty.release()
