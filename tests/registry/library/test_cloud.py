"""GET /api/status: corral has no cloud, so it says what an ollama with its cloud disabled says."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient

from registry.server.app import create_app
from tests.registry.conftest import make_settings


async def test_cloud_is_disabled_by_corrals_configuration(client: TestClient) -> None:
    response = await client.get("/api/status")
    assert response.status == 200
    assert await response.json() == {"cloud": {"disabled": True, "source": "config"}}


async def test_ollama_no_cloud_adds_the_environment(aiohttp_client: Callable[..., Awaitable[TestClient]],
                                                    tmp_path: Path) -> None:
    client = await aiohttp_client(await create_app(make_settings(tmp_path, OLLAMA_NO_CLOUD="1")))
    assert await (await client.get("/api/status")).json() == {"cloud": {"disabled": True, "source": "both"}}
