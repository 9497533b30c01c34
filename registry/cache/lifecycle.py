"""The cache lifecycle of one server: reconcile at startup, then prune, scrub and keep-warm in the background.

Built in two steps because its parts need the services, which exist only once the application
starts: `Lifecycle(...)` at application creation (the metrics and the blob-reader count are
needed by middleware and responses from the first request), `start` in the startup hook —
reconciliation first, before any request is served, then the background tasks — and `stop` on
shutdown, before the services close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from registry.config import Settings
from registry.server.metrics import CacheMetrics
from registry.model.names import Digest
from registry.cache.prune import CHECK_INTERVAL, FILL_POLL, Pruner
from registry.storage.reconcile import ReconcileReport, reconcile
from registry.cache.scrub import Scrubber
from registry.server.services import Services
from registry.mirror.keepwarm import KeepWarm
from runner.http.ollama import Runner


@dataclass
class Lifecycle:
    settings: Settings
    runner: Runner
    metrics: CacheMetrics
    readers: Counter[Digest]  # open /v2 blob GETs per digest (serving.blob_meter)
    prune_interval: float = CHECK_INTERVAL  # tests shrink these before the application starts
    prune_poll: float = FILL_POLL
    services: Services = field(init=False)
    pruner: Pruner = field(init=False)
    scrubber: Scrubber = field(init=False)
    keep_warm: KeepWarm = field(init=False)
    reconciled: ReconcileReport = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, services: Services) -> None:
        self.services = services
        self.reconciled = await reconcile(services.catalog, services.sessions, self.settings.noprune)
        self.pruner = Pruner(self.settings, services.catalog, services.fills,
                             self.runner.loaded_paths, self.metrics, interval=self.prune_interval,
                             poll=self.prune_poll)
        services.fills.make_room = self.pruner.run_to_end
        self.scrubber = Scrubber(services.catalog, services.sessions, services.leases, self.metrics)
        self.keep_warm = KeepWarm(services)
        self.metrics.attach(services, self.runner, self.readers)
        self._spawn(self.pruner.loop(), "pruner")
        if self.settings.scrub_interval > 0:
            self._spawn(self.scrubber.loop(self.settings.scrub_interval), "scrubber")
        if self.keep_warm.names:
            self._spawn(self.keep_warm.loop(self.settings.sync_interval), "keep-warm")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=f"corral {name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("cache_lifecycle", Lifecycle)
