"""Registry tokens and used nonces in a cluster: kept in the catalogue, so a client's token from
one node is good on every node behind the load balancer, and a signed token request replayed to
another node is refused like one replayed to the same node.

A nonce is claimed by inserting its row (the sha256 of the key and the nonce) with ON CONFLICT DO
NOTHING: of two nodes given the same request at once, exactly one inserts it. Tokens are stored by
their sha256. Rows past use (tokens expired, nonces older than twice the signature window) are
deleted when a token is issued, which is rare enough to carry the cleanup.
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.auth.access import SIGNATURE_WINDOW, Grant, Grants
from registry.storage.db import IssuedToken, UsedNonce, dialect_insert


class SharedGrants(Grants):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__()
        self._sessions = sessions

    async def use_nonce(self, key: bytes, nonce: str, now: float) -> bool:
        row_id = hashlib.sha256(key + b"\0" + nonce.encode()).hexdigest()
        async with self._sessions.begin() as s:
            await s.execute(delete(UsedNonce).where(UsedNonce.used_at < now - 2 * SIGNATURE_WINDOW))
            inserted = await s.execute(dialect_insert(s, UsedNonce).values(id=row_id, used_at=now)
                                       .on_conflict_do_nothing())
        return inserted.rowcount == 1

    async def remember(self, token: str, grant: Grant) -> None:
        async with self._sessions.begin() as s:
            await s.execute(delete(IssuedToken).where(IssuedToken.expires_at < time.time()))
            s.add(IssuedToken(token_hash=_hashed(token), key=grant.key, expires_at=grant.expires))

    async def lookup(self, token: str) -> Grant | None:
        async with self._sessions() as s:
            found = await s.execute(select(IssuedToken).where(IssuedToken.token_hash == _hashed(token)))
            row = found.scalar_one_or_none()
        return None if row is None else Grant(row.key, row.expires_at)


def _hashed(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
