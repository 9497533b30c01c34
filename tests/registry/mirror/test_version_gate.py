"""registry.ollama.ai's version gate holds for cached tags too: an old client gets the 412 the
upstream gave, not a model it cannot load, across restarts and offline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from registry.mirror.version_gate import Gate, Refusal, Verdict, VersionGates, client_version
from registry.model.names import ModelName
from registry.storage.db import make_engine, make_sessionmaker, upgrade_database
from tests.support.fake_ollama_registry import GATE_MESSAGE, FakeOllamaRegistry
from tests.support.legacy_pull import LegacyPuller, PullError
from tests.support.mirror import mirror_client, model_layers
from tests.support.postgres import both_databases

Client = Callable[..., Awaitable[TestClient]]
PATH = "/v2/library/m/manifests/latest"
REFUSAL = Refusal(412, GATE_MESSAGE.encode(), "text/plain")


def ua(version: str) -> dict[str, str]:
    return {"User-Agent": f"ollama/{version} (amd64 linux) Go/go1.24.0"}


def test_versions_come_from_ollamas_user_agent() -> None:
    assert client_version("ollama/0.33.0 (amd64 linux) Go/go1.24.0") == (0, 33, 0)
    assert client_version("ollama/0.12.0-rc1 (arm64 darwin) Go/go1.24.0") == (0, 12, 0)
    assert client_version("ollama/0.33.0 (amd64 linux) corral/0.1.0") == (0, 33, 0)
    assert client_version("Go-http-client/1.1") is None and client_version("") is None


def test_the_bounds_move_as_the_upstream_answers() -> None:
    gate = Gate().passed_by((0, 33, 0), "d1")
    assert [gate.verdict(v) for v in ((0, 40, 0), (0, 33, 0), (0, 20, 0))] == [Verdict.SERVE, Verdict.SERVE,
                                                                              Verdict.ASK]
    gate = gate.refused_for((0, 20, 0), REFUSAL)
    assert [gate.verdict(v) for v in ((0, 19, 9), (0, 20, 0), (0, 25, 0))] == [Verdict.REFUSE, Verdict.REFUSE,
                                                                              Verdict.ASK]
    gate = gate.passed_by((0, 25, 0), "d1")
    assert (gate.passed, gate.refused, gate.verdict((0, 26, 0))) == ((0, 25, 0), (0, 20, 0), Verdict.SERVE)
    moved = gate.passed_by((0, 40, 0), "d2")  # a new manifest may need more: what passed before no longer counts
    assert (moved.passed, moved.refused, moved.verdict((0, 30, 0))) == ((0, 40, 0), (0, 20, 0), Verdict.ASK)
    raised = gate.refused_for((0, 30, 0), REFUSAL)  # the upstream wants more than what it gave before
    assert (raised.passed, raised.refused, raised.verdict((0, 40, 0))) == (None, (0, 30, 0), Verdict.ASK)


async def test_a_cached_tag_refuses_old_clients_as_the_upstream_did(aiohttp_client: Client, tmp_path: Path,
                                                                    fake_registry: FakeOllamaRegistry) -> None:
    raw = fake_registry.add_model("library/m", "latest", model_layers(1, 1000))
    fake_registry.min_version = (0, 30, 0)
    mirror = await mirror_client(aiohttp_client, tmp_path, fake_registry.url, CORRAL_MANIFEST_TTL="1h",
                                 CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host)

    def asked() -> int:
        return len(fake_registry.registry_requests("manifests"))

    assert await (await mirror.get(PATH, headers=ua("0.33.0"))).read() == raw  # cached from here on
    old = await mirror.get(PATH, headers=ua("0.20.0"))  # never judged: asked upstream within the TTL
    assert (old.status, await old.text(), asked()) == (412, GATE_MESSAGE, 2)
    older = await mirror.get(PATH, headers=ua("0.19.0"))  # older than a refused one: refused from memory
    assert (older.status, await older.text(), older.content_type, asked()) == (412, GATE_MESSAGE, "text/plain", 2)
    assert (await mirror.get(PATH, headers=ua("0.31.0"))).status == 200 and asked() == 3
    assert (await mirror.get(PATH, headers=ua("0.32.0"))).status == 200 and asked() == 3  # newer than a passed one
    pull = await mirror.post("/api/pull", json={"model": "m", "stream": False})
    assert pull.status == 200  # corral's own pulls are ollama 0.33.0's
    with pytest.raises(PullError) as refused:  # what an old ollama prints, pulling the cached model
        await LegacyPuller(str(mirror.make_url("")), tmp_path / "old", user_agent=ua("0.5.0")["User-Agent"]
                           ).pull("library/m", "latest")
    assert str(refused.value) == f"pull model manifest: 412: {GATE_MESSAGE}" and asked() == 3
    await mirror.close()

    offline = await mirror_client(aiohttp_client, tmp_path, fake_registry.url, CORRAL_OFFLINE="1")
    before = len(fake_registry.log)
    remembered = await offline.get(PATH, headers=ua("0.10.0"))  # across a restart, with no upstream at all
    assert (remembered.status, await remembered.text()) == (412, GATE_MESSAGE)
    assert await (await offline.get(PATH, headers=ua("0.31.0"))).read() == raw
    assert len(fake_registry.log) == before


async def test_clients_without_a_version_are_left_to_the_ttl(aiohttp_client: Client, tmp_path: Path,
                                                             fake_registry: FakeOllamaRegistry) -> None:
    raw = fake_registry.add_model("library/m", "latest", model_layers(2, 1000))
    mirror = await mirror_client(aiohttp_client, tmp_path, fake_registry.url, CORRAL_MANIFEST_TTL="1h")
    assert await (await mirror.get(PATH, headers=ua("0.33.0"))).read() == raw
    fake_registry.min_version = (9, 0, 0)
    anonymous = await mirror.get(PATH, headers={"User-Agent": "curl/8.0"})
    assert await anonymous.read() == raw and len(fake_registry.registry_requests("manifests")) == 1


@both_databases
async def test_many_clients_recording_one_tags_gate_at_once_all_succeed(database_url: str) -> None:
    """Eight clients (of several nodes, in a cluster) pull one tag at once and each records what the
    upstream answered it: every update lands on the one row, none fails on its primary key."""
    await upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        gates = VersionGates(make_sessionmaker(engine))
        name = ModelName.parse("gated")
        versions = [(0, 5, n) for n in range(8)]
        await asyncio.gather(*(gates.passed(name, version, "sha256:" + "1" * 64) for version in versions))
        assert await gates.get(name) == Gate("sha256:" + "1" * 64, passed=(0, 5, 0))
    finally:
        await engine.dispose()
