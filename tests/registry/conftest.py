"""Fixtures for registry tests: an in-process app on real SQLite and real folders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from registry.config import Settings, load_settings
from registry.server.app import create_app
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.mirror import mirror_client


def make_settings(root: Path, **env: str) -> Settings:
    base = {
        "OLLAMA_MODELS": str(root / "models"),
        "CORRAL_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'corral.db'}",
        "CORRAL_OFFLINE": "1",
    }
    base.update(env)
    return load_settings(env=base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


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
