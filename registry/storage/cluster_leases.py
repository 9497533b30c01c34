"""Leases in a cluster: the in-process leases of `storage.leases`, published in `blob_leases` so
the node on duty never prunes a blob another node is reading, pulling or has loaded.

A node publishes a digest once, when it first leases it (a row per node and digest, not a write
per read), and `sync`, which the lifecycle runs every heartbeat on every node, drops the rows of
digests it no longer uses and adds the blobs its runner has loaded. A row lives exactly as long as
its node's row (a foreign key with ON DELETE CASCADE), and counts only while that node is live, so
a dead node's leases lapse with its heartbeat and nothing has to renew them one by one.

Publishing races a prune on another node without either losing: the publisher inserts its row and
then reads the blob's row FOR SHARE in one transaction; a prune locks the blob rows it would delete
(FOR UPDATE, or by deleting them) before it reads the leases. Whichever locks first, either the
prune sees the lease and keeps the blob, or the publisher finds the blob's row already gone (its
reader then gets the bytes of a file still open, or a 404 if the file went first).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.model.names import Digest
from registry.storage.db import Blob, BlobLease, Node, dialect_insert
from registry.storage.leases import Leases

log = logging.getLogger("corral.leases")


class ClusterLeases(Leases):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], node_id: str) -> None:
        super().__init__()
        self._sessions = sessions
        self.node_id = node_id
        self._published: set[str] = set()
        self._lock = asyncio.Lock()  # one writer of this node's rows at a time

    async def publish(self, *digests: Digest) -> None:
        async with self._lock:
            new = sorted({str(d) for d in digests} - self._published)
            if not new:
                return
            try:
                async with self._sessions.begin() as s:
                    await self._insert(s, new)
                    await s.execute(select(Blob.digest).where(Blob.digest.in_(new)).with_for_update(read=True))
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not publish the leases of %d blob(s) to the other nodes: %s", len(new), exc)
                return
            self._published.update(new)

    async def sync(self, loaded: set[str]) -> None:
        async with self._lock:
            want = {str(d) for d in self.held()} | loaded
            stale, new = self._published - want, sorted(want - self._published)
            if not stale and not new:
                return
            async with self._sessions.begin() as s:
                if stale:
                    await s.execute(delete(BlobLease).where(BlobLease.node_id == self.node_id,
                                                            BlobLease.digest.in_(stale)))
                if new:
                    await self._insert(s, new)
            self._published = (self._published - stale) | set(new)

    async def held_elsewhere(self, session: AsyncSession) -> set[str]:
        live = select(Node.id).where(Node.expires_at >= time.time(), Node.id != self.node_id)
        rows = await session.execute(select(BlobLease.digest).where(BlobLease.node_id.in_(live)).distinct())
        return set(rows.scalars())

    async def _insert(self, s: AsyncSession, digests: list[str]) -> None:
        await s.execute(dialect_insert(s, BlobLease).values([{"node_id": self.node_id, "digest": d} for d in digests])
                        .on_conflict_do_nothing())
