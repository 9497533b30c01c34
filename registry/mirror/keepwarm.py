"""Keep-warm: the models in CORRAL_SYNC are pulled at startup and refreshed every CORRAL_SYNC_INTERVAL.

So that a LAN's standard models are present before anyone asks. Each pull is exactly what
`POST /api/pull` does (the same single-flight fills, so a client asking meanwhile joins the
transfer instead of starting another, and CORRAL_UPSTREAM_RATE applies); a refresh re-checks the
tag upstream once it is older than CORRAL_MANIFEST_TTL and fetches only blobs that changed.
Models on the list are never evicted by the quota (see `cache.prune.KeepList`). Failures are logged and
retried at the next interval; they never stop the server. Offline, the egress gate decides as for
any pull: a model on a host listed in CORRAL_ALLOWED_HOSTS is still kept warm, a cached one stays
present, and the rest are recorded as refused without a connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from registry.egress.gate import EgressRefused
from registry.mirror.fills import FillError
from registry.mirror.pull import Puller
from registry.mirror.upstream import Upstream, UpstreamError
from registry.model.names import InvalidNameError, ModelName
from registry.web.errors import ApiError

log = logging.getLogger("corral.sync")


class KeepWarm:
    def __init__(self, puller: Puller, upstream: Upstream, sync: Iterable[str]) -> None:
        self.puller = puller
        self.upstream = upstream
        self.names: list[ModelName] = []
        for text in sync:
            try:
                self.names.append(ModelName.parse(text))
            except InvalidNameError:
                log.error("CORRAL_SYNC: %r is not a model name; skipped", text)
        self.last: dict[str, dict[str, Any]] = {}  # name → outcome of its last pull, for the status page

    async def pull(self, name: ModelName) -> None:
        shown = name.display_shortest()
        started = time.time()
        try:
            endpoint = self.upstream.endpoint_for(name)
            async for _ in self.puller.events(name, endpoint):
                pass
        except (ApiError, UpstreamError, EgressRefused, FillError) as exc:
            self.last[shown] = {"ok": False, "error": str(exc), "at": time.time()}
            log.warning("keep-warm pull of %s failed: %s", shown, exc)
            return
        self.last[shown] = {"ok": True, "at": time.time(), "seconds": round(time.time() - started, 3)}
        log.info("keep-warm: %s is present", shown)

    async def loop(self, interval: float) -> None:
        """Pull every listed model now, then every `interval` seconds (never again when 0)."""
        while True:
            for name in self.names:
                try:
                    await self.pull(name)
                except Exception:  # a bug in one pull must not end keep-warm for the others
                    log.exception("keep-warm pull of %s failed", name.display_shortest())
            if interval <= 0:
                return
            await asyncio.sleep(interval)
