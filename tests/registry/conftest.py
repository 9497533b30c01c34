"""Fixtures for registry tests: an in-process app on real SQLite (or a real PostgreSQL) and real folders."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from itertools import count
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from registry.config import Settings, load_settings
from registry.server.app import create_app
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.mirror import mirror_client
from tests.support.postgres import PostgresServer, start_postgres


def make_settings(root: Path, **env: str) -> Settings:
    base = {
        "OLLAMA_MODELS": str(root / "models"),
        "CORRAL_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'corral.db'}",
        "CORRAL_OFFLINE": "1",
    }
    base.update(env)
    return load_settings(env=base)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole session, started when a test first needs it."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def database_kind(request: pytest.FixtureRequest) -> str:
    """"sqlite" unless a test asks for both engines (`tests.support.postgres.both_databases`)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def new_database(request: pytest.FixtureRequest, database_kind: str, tmp_path: Path) -> Callable[[], str]:
    """Makes empty catalogues of the test's kind: SQLite files in its folder (the first one is
    `corral.db`, where the helpers look), or databases on the session's PostgreSQL server."""
    if database_kind == "postgresql":
        return request.getfixturevalue("postgres").new_database
    numbers = count()

    def sqlite_file() -> str:
        n = next(numbers)
        return f"sqlite+aiosqlite:///{tmp_path / ('corral.db' if n == 0 else f'corral-{n}.db')}"

    return sqlite_file


@pytest.fixture
def database_url(new_database: Callable[[], str]) -> str:
    return new_database()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, CORRAL_DATABASE_URL=database_url)


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings
) -> TestClient:
    return await aiohttp_client(await create_app(settings))


@pytest.fixture
async def fake_registry() -> AsyncIterator[FakeOllamaRegistry]:
    """registry.ollama.ai's quirks on loopback (307 to a CDN port, text/plain manifests, UA gate)."""
    registry = await FakeOllamaRegistry().start()
    yield registry
    await registry.close()


@pytest.fixture
async def mirror(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> TestClient:
    """An in-process corral mirroring `fake_registry`, with test-sized timeouts and segments; its
    CDN is on loopback, so it is listed in CORRAL_ALLOWED_HOSTS (the documented way to allow it)."""
    return await mirror_client(aiohttp_client, tmp_path, fake_registry.url, CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host)
