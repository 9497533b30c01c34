"""Who fetches each blob: the owner of its `fills` row, so a cluster fetches every blob once.

A single server owns every fill it starts (it holds the whole catalogue), so here it only saves
progress and forgets it. In a cluster a node must first *take* the fill's row, under a row lock:

* no row yet → it inserts one naming itself, and fetches;
* a row whose owner is live (its heartbeat on the row is recent and its node's row is live) →
  another node is fetching: this node *follows*, reading the row's progress (`look`) and serving
  its clients from the shared partial file up to the bytes the owner has checkpointed;
* a row with no owner (the owner stopped cleanly, or its upstream failed) or a stale one (the
  owner died) → it takes the row over and resumes from the last checkpoint, so nothing is fetched
  twice beyond the owner's unsaved tail.

The owner renews `heartbeat_at` with every checkpoint tick (`save`), whether bytes arrived or not,
and each save is conditional on still being the owner: a node that stalled long enough to be taken
over learns it at its next tick (`ClaimLost`) and becomes a follower. Publishing the blob happens
under the row's lock (`publishing`), so a takeover waits for it and then finds the blob stored.

Followers poll the row rather than LISTEN for notifications: a follower must notice a dead owner,
and a dead node sends nothing, so it reads the row on a timer anyway; progress only becomes
readable at checkpoints (about once a second), so a notification could not make it fresher; and
LISTEN needs a connection held outside the pool, which transaction-pooling proxies (PgBouncer)
do not offer. The cost is one primary-key read per followed fill per half second.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.model.names import Digest
from registry.storage.db import BLOB_VERIFIED, Blob, FillProgress, Node, dialect_insert

log = logging.getLogger("corral.fills")


class Claim(enum.Enum):
    OWNED = "owned"  # this node fetches
    FOLLOWING = "following"  # another live node fetches
    STORED = "stored"  # the blob was published meanwhile: nothing to fetch


class ClaimLost(Exception):
    """Another node took this node's fill over (it was silent too long): stop fetching, follow."""


@dataclass(frozen=True)
class FillRecord:
    """A fill's row as a follower reads it."""

    owner: str | None
    owner_name: str | None
    live: bool  # the owner's claim holds: keep following
    segments: str  # JSON [[offset, length, done], ...], bytes the owner has checkpointed
    size: int


@dataclass(frozen=True)
class SavedProgress:
    size: int
    segments: str
    created_at: float


@dataclass(frozen=True)
class FillSource:
    """What a fill's row records about where the blob comes from."""

    digest: Digest
    size: int
    media_type: str | None
    source: str
    repository: str


class FillClaims:
    """The `fills` rows as owned by this server (`node_id` None) or by this node of a cluster."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], node_id: str | None = None,
                 stale_after: float = 30.0) -> None:
        self._sessions = sessions
        self.node_id = node_id
        self.stale_after = stale_after  # seconds of silence after which an owner counts as dead

    @property
    def clustered(self) -> bool:
        return self.node_id is not None

    async def take(self, fill: FillSource) -> Claim:
        """Decide who fetches `fill`, taking it when nobody live does."""
        if self.node_id is None:
            return Claim.OWNED
        claim = None
        while claim is None:  # None: the row went while this node waited for its lock, and no blob came of it
            claim = await self._try_take(fill)
        return claim

    async def _try_take(self, fill: FillSource) -> Claim | None:
        now = time.time()
        key = str(fill.digest)
        async with self._sessions.begin() as s:
            await s.execute(dialect_insert(s, FillProgress).values(
                digest=key, size=fill.size, media_type=fill.media_type, source=fill.source,
                repository=fill.repository, segments="[]", created_at=now, updated_at=now,
                owner=self.node_id, heartbeat_at=now,
            ).on_conflict_do_nothing())
            # waits while an owner publishes (it holds the row), and then finds the row deleted
            row = (await s.execute(select(FillProgress).where(FillProgress.digest == key)
                                   .with_for_update())).scalar_one_or_none()
            if await _verified(s, key):  # published between the caller's look and this lock
                if row is not None:
                    await s.delete(row)
                return Claim.STORED
            if row is None:
                return None
            if row.owner == self.node_id:
                return Claim.OWNED
            if await self._live(s, row, now):
                return Claim.FOLLOWING
            previous, silent = await _node_name(s, row.owner), now - (row.heartbeat_at or now)
            row.owner, row.heartbeat_at = self.node_id, now
        if previous is None:
            log.info("taking up the fill of %s where the node that stopped it left off", fill.digest.short)
        else:
            log.warning("taking over the fill of %s from node %s (silent for %.0fs)", fill.digest.short,
                        previous, silent)
        return Claim.OWNED

    async def saved(self, digest: Digest) -> SavedProgress | None:
        """The progress recorded for `digest`, to resume from."""
        async with self._sessions() as s:
            row = await s.get(FillProgress, str(digest))
            return None if row is None else SavedProgress(row.size, row.segments, row.created_at)

    async def begin(self, fill: FillSource, segments: str, created_at: float) -> None:
        """Record the layout a fill starts (or resumes) with, as this node's."""
        now = time.time()
        async with self._sessions.begin() as s:
            await s.merge(FillProgress(
                digest=str(fill.digest), size=fill.size, media_type=fill.media_type, source=fill.source,
                repository=fill.repository, segments=segments, created_at=created_at, updated_at=now,
                owner=self.node_id, heartbeat_at=now if self.node_id is not None else None,
            ))

    async def look(self, digest: Digest) -> FillRecord | None:
        """The row as a follower sees it; None once the fill ended (published, or given up)."""
        now = time.time()
        async with self._sessions() as s:
            row = await s.get(FillProgress, str(digest))
            if row is None:
                return None
            return FillRecord(row.owner, await _node_name(s, row.owner), await self._live(s, row, now),
                              row.segments, row.size)

    async def save(self, digest: Digest, segments: str | None) -> None:
        """Record progress (`segments`, after its bytes were fsynced) and, in a cluster, renew the
        heartbeat (`segments` None: a tick without new bytes). Raises ClaimLost when another node
        took the fill over."""
        now = time.time()
        values: dict[str, object] = {} if segments is None else {"segments": segments, "updated_at": now}
        where = [FillProgress.digest == str(digest)]
        if self.node_id is not None:
            values["heartbeat_at"] = now
            where.append(FillProgress.owner == self.node_id)
        if not values:
            return
        async with self._sessions.begin() as s:
            result = await s.execute(update(FillProgress).where(*where).values(**values))
        if self.node_id is not None and result.rowcount == 0:
            raise ClaimLost(f"another node took over the fill of {digest}")

    async def release(self, digest: Digest) -> None:
        """Let another node resume this fill at once (this one stopped, its progress kept)."""
        if self.node_id is None:
            return
        async with self._sessions.begin() as s:
            await s.execute(update(FillProgress)
                            .where(FillProgress.digest == str(digest), FillProgress.owner == self.node_id)
                            .values(owner=None))

    @contextlib.asynccontextmanager
    async def publishing(self, digest: Digest) -> AsyncIterator[None]:
        """Hold the fill while its blob is published, then forget it: a node taking over waits
        for the lock and finds the blob stored. Raises ClaimLost if the fill is not this node's."""
        async with self._sessions.begin() as s:
            if self.node_id is not None:
                owner = (await s.execute(select(FillProgress.owner).where(FillProgress.digest == str(digest))
                                         .with_for_update())).scalar_one_or_none()
                if owner != self.node_id:
                    raise ClaimLost(f"another node took over the fill of {digest} before it was published")
            yield
            await s.execute(delete(FillProgress).where(FillProgress.digest == str(digest)))

    async def forget(self, digest: Digest) -> None:
        """Drop the fill's progress (its partial file is gone or worthless)."""
        async with self._sessions.begin() as s:
            await s.execute(delete(FillProgress).where(FillProgress.digest == str(digest)))

    async def _live(self, s: AsyncSession, row: FillProgress, now: float) -> bool:
        if row.owner is None or (row.heartbeat_at or 0.0) < now - self.stale_after:
            return False
        expires = (await s.execute(select(Node.expires_at).where(Node.id == row.owner))).scalar_one_or_none()
        return expires is not None and expires >= now


async def _verified(s: AsyncSession, digest: str) -> bool:
    state = (await s.execute(select(Blob.state).where(Blob.digest == digest))).scalar_one_or_none()
    return state == BLOB_VERIFIED


async def _node_name(s: AsyncSession, node_id: str | None) -> str | None:
    if node_id is None:
        return None
    name = (await s.execute(select(Node.name).where(Node.id == node_id))).scalar_one_or_none()
    return name or node_id
