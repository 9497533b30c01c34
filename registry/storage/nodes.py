"""The nodes of a cluster (CORRAL_CLUSTER): each running server's row in `nodes`, kept by a heartbeat.

Where a single server claims the one `catalogue_owner` row, a node adds its own row: any number
of nodes share the catalogue. A node is live while its promise (`expires_at`, renewed every
CORRAL_OWNER_HEARTBEAT, three intervals ahead) holds, stale after. Stale rows stay listed in the
status, so an operator sees a crashed node, until the same node starts again (its name's lock in
the shared folder, held now, proves the previous process gone) or they are a day past expiry.

A cluster and a single server exclude each other on one catalogue: each writes its own row first
and then looks for the other's live rows, withdrawing if it finds any, so of two starting at once
at least one sees the other (`live_owner` and `live_nodes` are the looks).
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
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.storage.db import CatalogueOwner, Node
from registry.storage.owner import STALE_HEARTBEATS, CatalogueInUse, OwnerRecord

log = logging.getLogger("corral.nodes")

FORGET_AFTER = 86400.0  # a stale node's row is dropped this long after its promise ran out
LIVE, STALE = "live", "stale"


@dataclass(frozen=True)
class NodeRecord:
    """One node as its row stores it."""

    id: str
    name: str
    host: str
    pid: int
    advertise_url: str
    models: str
    started_at: float
    heartbeat_at: float
    expires_at: float

    @classmethod
    def for_this_process(cls, name: str, models: Path, advertise_url: str) -> NodeRecord:
        now = time.time()
        return cls(uuid.uuid4().hex, name, socket.gethostname(), os.getpid(), advertise_url,
                   str(models.resolve()), now, now, now)

    @classmethod
    def from_row(cls, row: Node) -> NodeRecord:
        return cls(row.id, row.name, row.host, row.pid, row.advertise_url, row.models, row.started_at,
                   row.heartbeat_at, row.expires_at)

    def state(self, now: float) -> str:
        return LIVE if self.expires_at >= now else STALE

    def describe(self, now: float) -> str:
        return (f"node {self.name}, pid {self.pid} on {self.host}, {self.advertise_url}, "
                f"last heartbeat {max(0.0, now - self.heartbeat_at):.0f}s ago")


class NodeRegistration:
    """This node's row: `register` once, `renew` every interval, `release` at a clean stop."""

    def __init__(self, engine: AsyncEngine, me: NodeRecord, interval: float) -> None:
        self._engine = engine
        self.me = me
        self.interval = interval

    async def register(self) -> None:
        """Add this node's row, replacing the rows of earlier runs of this node. Raises
        CatalogueInUse when a single server owns the catalogue, or a live node of the same name
        runs on another host (two hosts given one name, on a filesystem whose locks do not reach
        across hosts)."""
        now = time.time()
        rows = await read_nodes(self._engine)
        twin = next((n for n in rows if n.name == self.me.name and n.host != self.me.host and n.state(now) == LIVE),
                    None)
        if twin is not None:
            raise CatalogueInUse(f"another corral node named {self.me.name} is live on this catalogue "
                                 f"({twin.describe(now)}); give each node its own CORRAL_NODE_NAME")
        earlier = [n.id for n in rows if n.name == self.me.name]
        forgotten = [n.id for n in rows if n.expires_at < now - FORGET_AFTER]
        async with self._engine.begin() as conn:
            if earlier or forgotten:
                await conn.execute(delete(Node).where(Node.id.in_(earlier + forgotten)))
            await conn.execute(insert(Node).values(**self._row(now)))
        try:
            await refuse_if_owned(self._engine)
        except CatalogueInUse:
            await self.release()
            raise
        if earlier:
            log.info("replaced the row of this node's previous run (it did not shut down cleanly)")
        others = [n for n in rows if n.id not in earlier and n.state(now) == LIVE]
        log.info("joined the cluster on %s as node %s (%s); %d other node%s live", _shown(self._engine),
                 self.me.name, self.me.advertise_url, len(others), "" if len(others) == 1 else "s")

    async def renew(self) -> bool:
        """Push `expires_at` forward, adding the row again if it was dropped meanwhile (a node
        stalled for over a day). Always True: no other node can take a node's place."""
        now = time.time()
        async with self._engine.begin() as conn:
            renewed = await conn.execute(update(Node).where(Node.id == self.me.id)
                                         .values(heartbeat_at=now, expires_at=self._expiry(now)))
            if renewed.rowcount == 0:
                log.warning("this node's row was gone from the catalogue (stalled too long?); adding it again")
                await conn.execute(insert(Node).values(**self._row(now)))
        return True

    async def release(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(Node).where(Node.id == self.me.id))

    def _row(self, now: float) -> dict[str, object]:
        return asdict(self.me) | {"heartbeat_at": now, "expires_at": self._expiry(now)}

    def _expiry(self, now: float) -> float:
        return now + STALE_HEARTBEATS * self.interval


async def read_nodes(engine: AsyncEngine) -> list[NodeRecord]:
    """Every node row, oldest start first; none when the catalogue predates cluster mode."""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table(Node.__tablename__)):
            return []
        rows = (await conn.execute(select(Node).order_by(Node.started_at, Node.name))).all()
    return [NodeRecord.from_row(row) for row in rows]


async def live_nodes(engine: AsyncEngine) -> list[NodeRecord]:
    now = time.time()
    return [n for n in await read_nodes(engine) if n.state(now) == LIVE]


async def live_owner(engine: AsyncEngine) -> OwnerRecord | None:
    """The single server owning the catalogue, if one is live."""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table(CatalogueOwner.__tablename__)):
            return None
        row = (await conn.execute(select(CatalogueOwner))).first()
    if row is None or row.expires_at < time.time():
        return None
    return OwnerRecord(row.owner_id, row.host, row.pid, row.listen_url, row.models, row.started_at,
                       row.heartbeat_at, row.expires_at)


async def refuse_if_owned(engine: AsyncEngine) -> None:
    """Raise CatalogueInUse when a single server (outside cluster mode) owns the catalogue."""
    owner = await live_owner(engine)
    if owner is not None:
        raise CatalogueInUse(f"the catalogue {_shown(engine)} is owned by a corral server outside cluster mode "
                             f"({owner.describe(time.time())}); stop it, or start it with CORRAL_CLUSTER=1")


async def refuse_if_clustered(engine: AsyncEngine) -> None:
    """Raise CatalogueInUse when live cluster nodes share the catalogue."""
    nodes = await live_nodes(engine)
    if nodes:
        raise CatalogueInUse(f"the catalogue {_shown(engine)} is in use by {len(nodes)} corral cluster node"
                             f"{'s' if len(nodes) != 1 else ''} ({nodes[0].describe(time.time())}); "
                             "start this server with CORRAL_CLUSTER=1 to join them")


def _shown(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=True)
