"""The cluster's one blob store: an id in the shared models folder that the catalogue also records.

Every node must see the same files: a node started on another folder (a mount missing, a path
mistyped) would find none of the blobs the catalogue lists, and any cleanup it did would treat the
others' data as lost. So the first node writes a random id to `<models>/corral-store.id` and the
catalogue's `shared_store` row, and every node compares the two before it registers; a node
whose folder holds another id, or none while the catalogue names one, is refused with one line.
The file is published by a hard link, so two nodes creating it at once agree on the winner's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
import uuid
from pathlib import Path

from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.storage.db import SharedStore

STORE_ID_NAME = "corral-store.id"
SLOT = 1


class NotTheSharedStore(Exception):
    """This node's models folder is not the store the cluster on this catalogue shares."""


async def check_shared_store(engine: AsyncEngine, models: Path, *, record: bool = True) -> str | None:
    """The shared store's id, once this folder and the catalogue agree on it (recording it in
    both when neither has one yet). Raises NotTheSharedStore when they disagree. Without
    `record` (before migrating, when the catalogue may not have the table yet) it only compares,
    when the catalogue names a store."""
    recorded = await _recorded(engine)
    here = await asyncio.to_thread(_read_id, models)
    if recorded is None and not record:
        return None
    if recorded is None:
        if here is None:
            here = await asyncio.to_thread(_publish_id, models, uuid.uuid4().hex)
        try:
            async with engine.begin() as conn:
                await conn.execute(insert(SharedStore).values(slot=SLOT, store_id=here, created_at=time.time()))
        except IntegrityError:
            pass  # another node recorded one meanwhile: compared below
        recorded = await _recorded(engine)
    if here != recorded:
        found = f"holds store {here}" if here else f"has no {STORE_ID_NAME}"
        raise NotTheSharedStore(
            f"the models folder {models} is not the store the nodes on this catalogue share: it {found}, the "
            f"catalogue's nodes share store {recorded}; give every node the same shared models folder")
    return recorded


async def _recorded(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table(SharedStore.__tablename__)):
            return None
        return (await conn.execute(select(SharedStore.store_id).where(SharedStore.slot == SLOT))).scalar()


def _read_id(models: Path) -> str | None:
    try:
        return (models / STORE_ID_NAME).read_text().strip() or None
    except FileNotFoundError:
        return None


def _publish_id(models: Path, store_id: str) -> str:
    """Write the id, unless another node wrote one first; return the id the folder holds."""
    models.mkdir(parents=True, exist_ok=True)
    temp = models / f".{STORE_ID_NAME}-{secrets.token_hex(6)}"
    temp.write_text(store_id + "\n")
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    try:
        os.link(temp, models / STORE_ID_NAME)
    except FileExistsError:
        return _read_id(models) or store_id
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return store_id
