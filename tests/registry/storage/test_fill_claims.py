"""Who fetches a blob in a cluster, on a real PostgreSQL catalogue: one owner per fill, taken under
the row's lock; a live owner is followed, a silent or stopped one taken over; an owner that was
taken over learns it at its next save and cannot publish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.model.names import Digest
from registry.storage.db import make_engine, make_sessionmaker, upgrade_database
from registry.storage.fill_claims import Claim, ClaimLost, FillClaims, FillSource
from registry.storage.nodes import NodeRecord, NodeRegistration
from tests.support.catalogue import execute, query

DIGEST = Digest("ab" * 32)
FILL = FillSource(DIGEST, 1000, "application/vnd.ollama.image.model", "http://upstream", "library/m")
HEARTBEAT = 0.2


@pytest.fixture
async def nodes(postgres, tmp_path: Path) -> AsyncIterator[tuple[str, FillClaims, FillClaims, NodeRegistration,
                                                                  NodeRegistration]]:
    """A catalogue with two live nodes, a and b, and each one's claims."""
    url = postgres.new_database()
    await upgrade_database(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    a = NodeRegistration(engine, NodeRecord.for_this_process("a", tmp_path, "http://a"), HEARTBEAT)
    b = NodeRegistration(engine, NodeRecord.for_this_process("b", tmp_path, "http://b"), HEARTBEAT)
    await a.register()
    await b.register()
    stale = 3 * HEARTBEAT
    try:
        yield url, FillClaims(sessions, a.me.id, stale), FillClaims(sessions, b.me.id, stale), a, b
    finally:
        await engine.dispose()


async def test_one_owner_per_fill_and_the_others_follow_its_checkpoints(nodes) -> None:
    url, a, b, _, _ = nodes
    results = await asyncio.gather(a.take(FILL), b.take(FILL))
    assert sorted(r.value for r in results) == ["following", "owned"]  # taken under the row lock: one winner
    owner, follower = (a, b) if results[0] is Claim.OWNED else (b, a)
    assert await owner.take(FILL) is Claim.OWNED  # taking again is idempotent

    await owner.begin(FILL, "[[0, 1000, 0]]", time.time())
    await owner.save(DIGEST, "[[0, 1000, 400]]")
    seen = await follower.look(DIGEST)
    assert seen is not None and seen.live and seen.segments == "[[0, 1000, 400]]"
    assert seen.owner_name == ("a" if owner is a else "b")
    with pytest.raises(ClaimLost):
        await follower.save(DIGEST, "[[0, 1000, 999]]")  # a follower cannot record progress
    with pytest.raises(ClaimLost):
        async with follower.publishing(DIGEST):
            pass
    async with owner.publishing(DIGEST):
        execute(url, "INSERT INTO blobs (digest, size, state, created_at, last_access) "
                "VALUES (:d, 1000, 'verified', 0, 0)", d=str(DIGEST))
    assert await follower.look(DIGEST) is None  # published: the row is gone
    assert await follower.take(FILL) is Claim.STORED
    assert query(url, "SELECT digest FROM fills") == []


async def test_a_silent_owner_is_taken_over_from_its_checkpoint_and_learns_it(nodes) -> None:
    url, a, b, a_node, b_node = nodes
    assert await a.take(FILL) is Claim.OWNED
    await a.begin(FILL, "[[0, 1000, 0]]", time.time())
    await a.save(DIGEST, "[[0, 1000, 300]]")
    assert await b.take(FILL) is Claim.FOLLOWING
    await asyncio.sleep(4 * HEARTBEAT)  # a neither checkpoints nor renews its node row: it looks dead
    await b_node.renew()
    seen = await b.look(DIGEST)
    assert seen is not None and not seen.live
    assert await b.take(FILL) is Claim.OWNED
    assert query(url, "SELECT owner, segments FROM fills") == [(b.node_id, "[[0, 1000, 300]]")]
    await a_node.renew()  # a wakes up: its next tick tells it the fill is b's now
    with pytest.raises(ClaimLost):
        await a.save(DIGEST, None)
    assert await a.take(FILL) is Claim.FOLLOWING


async def test_a_stopped_owner_releases_its_fill_for_another_node_at_once(nodes) -> None:
    url, a, b, _, _ = nodes
    assert await a.take(FILL) is Claim.OWNED
    await a.begin(FILL, "[[0, 1000, 500]]", time.time())
    await a.release(DIGEST)
    seen = await b.look(DIGEST)
    assert seen is not None and not seen.live and seen.owner is None
    assert await b.take(FILL) is Claim.OWNED
    assert query(url, "SELECT owner, segments FROM fills") == [(b.node_id, "[[0, 1000, 500]]")]


async def test_a_take_that_waits_for_a_publishing_owner_finds_the_blob_stored(nodes) -> None:
    """A node asking while the owner publishes waits for the row's lock, then finds the row gone
    and the blob stored: nothing to fetch, and no error."""
    url, a, b, _, _ = nodes
    assert await a.take(FILL) is Claim.OWNED
    await a.begin(FILL, "[[0, 1000, 1000]]", time.time())
    async with a.publishing(DIGEST):
        taking = asyncio.create_task(b.take(FILL))
        await asyncio.sleep(0.5)
        assert not taking.done()  # held by the row's lock
        execute(url, "INSERT INTO blobs (digest, size, state, created_at, last_access) "
                "VALUES (:d, 1000, 'verified', 0, 0)", d=str(DIGEST))
    assert await taking is Claim.STORED
    assert query(url, "SELECT digest FROM fills") == []
