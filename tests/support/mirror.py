"""Helpers for mirror tests: an in-process corral pointed at a test upstream, with fast timeouts."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient

from registry.config import Settings, load_settings
from registry.mirror.upstream import Policy
from registry.model.manifest import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_TEMPLATE
from registry.server.app import create_app
from registry.server.services import SERVICES, Services

# Stalls, retries and backoff shrunk so fault tests take milliseconds, not ollama's 30 s.
FAST_POLICY = Policy(connect=2.0, request=5.0, stall=0.5, request_attempts=2, blob_attempts=4,
                     backoff=0.02, max_backoff=0.1)
SMALL_SEGMENT = 64 * 1024  # so test blobs of a few hundred KB fill as several concurrent segments
SMALL_BUFFER = 16 * 1024  # so each segment is written in several pieces, readers woken between them


def mirror_settings(root: Path, upstream: str, **env: str) -> Settings:
    base = {
        "OLLAMA_MODELS": str(root / "models"),
        "CORRAL_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'corral.db'}",
        "CORRAL_UPSTREAM": upstream,
        "CORRAL_OFFLINE": "0",
    }
    base.update(env)
    return load_settings(env=base)


def tune(services: Services, *, min_segment: int = SMALL_SEGMENT) -> None:
    services.upstream.policy = FAST_POLICY
    services.fills.min_segment = min_segment
    services.fills.flush_interval = 0.05
    services.fills.buffer_size = SMALL_BUFFER


async def mirror_client(aiohttp_client: Callable[..., Awaitable[TestClient]], root: Path, upstream: str,
                        **env: str) -> TestClient:
    client = await aiohttp_client(await create_app(mirror_settings(root, upstream, **env)))
    tune(client.server.app[SERVICES])
    return client


def services_of(client: TestClient) -> Services:
    return client.server.app[SERVICES]


def model_layers(seed: int, model_size: int) -> list[tuple[str, bytes]]:
    """A GGUF-sized weights layer (random bytes) plus the small template and params layers."""
    rng = random.Random(seed)
    return [
        (MEDIA_MODEL, rng.randbytes(model_size)),
        (MEDIA_TEMPLATE, b"{{ .Prompt }}"),
        (MEDIA_PARAMS, b'{"stop":["<|im_end|>"]}'),
    ]
