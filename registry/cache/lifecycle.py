"""The cache lifecycle of one server: reconcile at startup, then prune, scrub, keep-warm and the traffic
history in the background.

Its parts are built by the server before the application starts; `start` runs in the startup
hook — reconciliation first, before any request is served, then the background tasks — and
`stop` on shutdown, before the parts they use close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from registry.cache.history import History
from registry.cache.prune import Pruner
from registry.cache.scrub import Scrubber
from registry.config import Settings
from registry.mirror.keepwarm import KeepWarm
from registry.storage.catalog import Catalog
from registry.storage.reconcile import ReconcileReport, reconcile


class Lifecycle:
    def __init__(self, settings: Settings, catalog: Catalog, pruner: Pruner, scrubber: Scrubber,
                 keep_warm: KeepWarm, history: History) -> None:
        self.settings = settings
        self.catalog = catalog
        self.pruner = pruner
        self.scrubber = scrubber
        self.keep_warm = keep_warm
        self.history = history
        self.reconciled: ReconcileReport | None = None  # set by `start`, shown on the status page
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.reconciled = await reconcile(self.catalog, self.catalog.sessions, self.settings.noprune)
        self._spawn(self.pruner.loop(), "pruner")
        self._spawn(self.history.loop(), "history")
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
