"""The background duty of a cluster: which one node reconciles, prunes, scrubs and keeps models warm.

A PostgreSQL session advisory lock (`DUTY_LOCK`), held on one connection of its own for as long
as the node does the work. PostgreSQL drops it with the session, so a node that dies (kill -9,
a crashed host, a cut network once its TCP connection times out) hands the duty on without
anyone clearing anything; the other nodes try for it every interval. A node whose connection
is lost stops its background work at once, since another node may hold the lock by then.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from registry.storage.db import DUTY_LOCK

log = logging.getLogger("corral.duty")


class DutyLock:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def try_take(self) -> bool:
        """Take the duty if no other node holds it; True when this node holds it now."""
        if self._conn is not None:
            return True
        try:
            conn = await self._engine.connect()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not reach the catalogue to ask for the background duty: %s", exc)
            return False
        try:
            taken = (await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": DUTY_LOCK})).scalar()
            await conn.commit()  # the lock belongs to the session; no transaction is left open on its connection
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not ask for the background duty: %s", exc)
            await _drop(conn)
            return False
        if not taken:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def still_held(self) -> bool:
        """Whether the session holding the lock is alive (PostgreSQL releases the lock with it)."""
        if self._conn is None:
            return False
        try:
            await self._conn.execute(text("SELECT 1"))
            await self._conn.commit()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("lost the connection that holds the background duty: %s", exc)
            conn, self._conn = self._conn, None
            await _drop(conn)
            return False
        return True

    async def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": DUTY_LOCK})
            await conn.commit()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not hand back the background duty (it goes with the connection): %s", exc)
        await _drop(conn)


async def _drop(conn: AsyncConnection) -> None:
    """Close a connection for good: not back to the pool, where the session (and a lock) would live on."""
    with contextlib.suppress(SQLAlchemyError, OSError):
        await conn.invalidate()
    with contextlib.suppress(SQLAlchemyError, OSError):
        await conn.close()
