"""Fixtures for registry tests: an in-process app on real SQLite and real folders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from registry.config import Settings, load_settings
from registry.server import create_app


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
    return await aiohttp_client(create_app(settings))
