"""Reading and writing a catalogue from test code, whichever engine holds it (SQLite or PostgreSQL).

Statements are SQLAlchemy `text()` with named parameters (`:name`), so one spelling serves both
dialects. Each call runs on its own event loop in a thread, so sync tests and async tests (whose
loop is running) use the same helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


def query(url: str, sql: str, **params: Any) -> list[tuple]:
    """Rows of one statement on the catalogue at `url` (SQLite or PostgreSQL), from sync test code
    or from inside a running event loop alike (it runs on its own loop in a thread)."""
    return _in_thread(_statement(url, sql, params, fetch=True))


def execute(url: str, sql: str, *, autocommit: bool = False, **params: Any) -> None:
    """Run one statement and commit it (`autocommit` for those outside a transaction, CREATE DATABASE)."""
    _in_thread(_statement(url, sql, params, fetch=False, autocommit=autocommit))


async def _statement(url: str, sql: str, params: dict[str, Any], *, fetch: bool, autocommit: bool = False) -> Any:
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_async_engine(url, poolclass=NullPool, **options)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            return [tuple(row) for row in result] if fetch else None
    finally:
        await engine.dispose()


def _in_thread(work: Coroutine[Any, Any, Any]) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def table_names(url: str) -> set[str]:
    """The tables the catalogue at `url` has."""
    return _in_thread(_table_names(url))


async def _table_names(url: str) -> set[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
