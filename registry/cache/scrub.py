"""Scrub: re-hash stored blobs, and take any that no longer match their digest out of service.

Disks and filesystems rot silently; a mirror serving a flipped byte would spread it to every
client. A blob whose sha256 no longer matches is quarantined (`Catalog.quarantine_blob`: the
file moves to `quarantine/`, the row is marked, it is never served again); the pull-through
mirror then treats it as absent, so the next request fetches a good copy when upstream is
reachable. `corral scrub` checks everything now; with CORRAL_SCRUB_INTERVAL set, a background
task re-hashes one blob per interval, the one checked longest ago first, so the work is spread
thin and resumes where it was after a restart (`blobs.checked_at`). Hashing runs in a thread
under a lease, so neither the event loop nor pruning waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.cache.counters import CacheCounters
from registry.model.names import Digest
from registry.storage.catalog import Catalog
from registry.storage.db import BLOB_VERIFIED, Blob
from registry.storage.leases import Leases
from registry.storage.store import hash_file

log = logging.getLogger("corral.scrub")

OK, QUARANTINED, MISSING = "ok", "quarantined", "missing"


class Scrubber:
    def __init__(self, catalog: Catalog, sessions: async_sessionmaker[AsyncSession], leases: Leases,
                 counters: CacheCounters) -> None:
        self.catalog = catalog
        self.sessions = sessions
        self.leases = leases
        self.counters = counters
        self.checked = 0
        self.last_pass: dict[str, Any] | None = None

    async def check(self, digest: Digest) -> str:
        """Re-hash one blob; quarantine it on a mismatch."""
        with self.leases.hold(digest):
            try:
                actual, _ = await hash_file(self.catalog.store.path(digest))
            except FileNotFoundError:
                return MISSING  # pruned or deleted meanwhile; startup reconciliation covers the rest
            self.checked += 1
            if actual == digest:
                async with self.sessions.begin() as s:
                    await s.execute(update(Blob).where(Blob.digest == str(digest)).values(checked_at=time.time()))
                return OK
            self.counters.scrub_failures += 1
            log.error("scrub: %s hashes to %s; quarantining it, the mirror fetches it again on the next request",
                      digest, actual)
            await self.catalog.quarantine_blob(digest)
        return QUARANTINED

    async def _due(self, limit: int | None = None) -> list[tuple[Digest, int]]:
        """Verified blobs, the ones checked longest ago (or never) first."""
        query = (select(Blob.digest, Blob.size).where(Blob.state == BLOB_VERIFIED)
                 .order_by(func.coalesce(Blob.checked_at, 0.0), Blob.digest).limit(limit))
        async with self.sessions() as s:
            return [(Digest.parse(d), size) for d, size in (await s.execute(query)).all()]

    async def run_pass(self) -> AsyncIterator[dict[str, Any]]:
        """Check every verified blob now, yielding one event per blob and a summary."""
        due = await self._due()
        counts = {OK: 0, QUARANTINED: 0, MISSING: 0}
        started = time.time()
        for i, (digest, size) in enumerate(due, 1):
            result = await self.check(digest)
            counts[result] += 1
            yield {"status": result, "digest": str(digest), "size": size, "completed": i, "total": len(due)}
        self.last_pass = {"status": "success", "checked": counts[OK] + counts[QUARANTINED],
                          "quarantined": counts[QUARANTINED], "missing": counts[MISSING],
                          "seconds": round(time.time() - started, 3), "finished_at": time.time()}
        yield self.last_pass

    async def loop(self, interval: float) -> None:
        """One blob every `interval` seconds, forever."""
        while True:
            try:
                for digest, _ in await self._due(limit=1):
                    await self.check(digest)
            except Exception:
                log.exception("background scrub failed; trying again in %.0fs", interval)
            await asyncio.sleep(interval)
