"""One server per catalogue: the `catalogue_owner` row, claimed at startup and kept by a heartbeat.

The models folder's lock (`store_lock`) cannot protect a catalogue named by CORRAL_DATABASE_URL:
another folder, or another host, reaches the same database. So the catalogue records its owner
(host, pid, listen URL, models root), and the owner renews `expires_at` every interval. A server
finding a live owner refuses to start; it takes over a row whose owner has not renewed for
`STALE_HEARTBEATS` intervals (a crash), or at once one naming its own host and models folder,
whose lock it now holds, so that owner is certainly gone.

Every write is one conditional statement (insert into the single slot, or update where the row is
still exactly what was read), so of two servers claiming at the same moment only one changes the
row; the other reads it again and finds a live owner. Times are the writers' wall clocks: hosts
sharing a catalogue must agree on the time to well within a heartbeat interval.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import delete, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.storage.db import CatalogueOwner

log = logging.getLogger("corral.owner")

STALE_HEARTBEATS = 3  # missed renewals after which an owner counts as crashed
SLOT = 1
CLAIM_ATTEMPTS = 5  # each failed attempt means another server changed the row in between


@dataclass(frozen=True)
class OwnerRecord:
    """Who owns (or wants) the catalogue, as the row stores it."""

    owner_id: str
    host: str
    pid: int
    listen_url: str
    models: str
    started_at: float
    heartbeat_at: float
    expires_at: float

    @classmethod
    def for_this_process(cls, models: Path, listen_url: str) -> OwnerRecord:
        now = time.time()
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), listen_url, str(models.resolve()),
                   now, now, now)

    def describe(self, now: float) -> str:
        return (f"pid {self.pid} on {self.host}, {self.listen_url}, models {self.models}, "
                f"last heartbeat {max(0.0, now - self.heartbeat_at):.0f}s ago")


class CatalogueInUse(Exception):
    """Another live server owns the catalogue; the message names it."""


class OwnerClaim:
    """This server's claim on one catalogue: `claim` once, `renew` every interval, `release` at exit."""

    def __init__(self, engine: AsyncEngine, me: OwnerRecord, interval: float) -> None:
        self._engine = engine
        self.me = me
        self.interval = interval

    async def table_exists(self) -> bool:
        """Whether the catalogue is migrated far enough to say who owns it."""
        async with self._engine.connect() as conn:
            return await conn.run_sync(lambda sync: inspect(sync).has_table(CatalogueOwner.__tablename__))

    async def claim(self) -> OwnerRecord | None:
        """Become the owner; return the crashed owner taken over, if any. Raises CatalogueInUse."""
        for _ in range(CLAIM_ATTEMPTS):
            current = await self._read()
            now = time.time()
            if current is None:
                try:
                    async with self._engine.begin() as conn:
                        await conn.execute(insert(CatalogueOwner).values(slot=SLOT, **self._row(now)))
                except IntegrityError:
                    continue  # another server inserted first: look at it
                return None
            if not self._may_take(current, now):
                raise CatalogueInUse(self._refusal(current, now))
            async with self._engine.begin() as conn:
                taken = await conn.execute(
                    update(CatalogueOwner)
                    .where(CatalogueOwner.slot == SLOT, CatalogueOwner.owner_id == current.owner_id,
                           CatalogueOwner.heartbeat_at == current.heartbeat_at)
                    .values(**self._row(now))
                )
            if taken.rowcount == 1:
                self._log_takeover(current, now)
                return current
        winner = await self._read()  # every attempt lost a race: another server is claiming it now
        if winner is None:
            raise CatalogueInUse(f"the catalogue {self._shown_url()} is being claimed by other corral servers")
        raise CatalogueInUse(self._refusal(winner, time.time()))

    async def renew(self) -> bool:
        """Push `expires_at` forward; False when the row is no longer ours (another server took over)."""
        now = time.time()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(CatalogueOwner)
                .where(CatalogueOwner.slot == SLOT, CatalogueOwner.owner_id == self.me.owner_id)
                .values(heartbeat_at=now, expires_at=self._expiry(now))
            )
        return result.rowcount == 1

    async def release(self) -> None:
        """Clear the row at a clean shutdown, so the next server needs no wait."""
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(CatalogueOwner).where(CatalogueOwner.slot == SLOT,
                                             CatalogueOwner.owner_id == self.me.owner_id)
            )

    async def _read(self) -> OwnerRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(CatalogueOwner).where(CatalogueOwner.slot == SLOT))).first()
        if row is None:
            return None
        return OwnerRecord(row.owner_id, row.host, row.pid, row.listen_url, row.models, row.started_at,
                           row.heartbeat_at, row.expires_at)

    def _row(self, now: float) -> dict[str, object]:
        return asdict(self.me) | {"heartbeat_at": now, "expires_at": self._expiry(now)}

    def _expiry(self, now: float) -> float:
        return now + STALE_HEARTBEATS * self.interval

    def _may_take(self, current: OwnerRecord, now: float) -> bool:
        """A crashed owner: its promise expired, or it ran on our host from our (now locked) folder."""
        return current.expires_at < now or self._same_folder(current)

    def _same_folder(self, current: OwnerRecord) -> bool:
        return current.host == self.me.host and current.models == self.me.models

    def _log_takeover(self, current: OwnerRecord, now: float) -> None:
        if self._same_folder(current):
            log.info("took over the catalogue from the previous server on this models folder "
                     "(pid %d), which did not shut down cleanly", current.pid)
        else:
            log.warning("took over the catalogue from a server that stopped renewing its claim (%s)",
                        current.describe(now))

    def _refusal(self, current: OwnerRecord, now: float) -> str:
        return f"the catalogue {self._shown_url()} is in use by another corral server ({current.describe(now)})"

    def _shown_url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)
