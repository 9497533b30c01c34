"""Alembic environment: runs migrations over the async engine named by the config's URL.

On PostgreSQL the whole upgrade is one transaction holding the migration advisory lock, so
servers starting together on one catalogue migrate it one after the other.
"""

import asyncio

from alembic import context

from registry.storage.db import Base, hold_migration_lock, make_migration_engine

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    hold_migration_lock(connection)
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_migration_engine(config.get_main_option("sqlalchemy.url"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
