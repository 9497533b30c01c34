"""Quota pruning through a real mirror: LRU eviction of whole models, pins, blobs in use, GC."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from registry.cache.prune import KeepList
from registry.model.manifest import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_TEMPLATE
from registry.model.names import Digest, ModelName
from registry.storage.leases import Leases, inode_of
from tests.support.cache import (
    add_model,
    api_pull,
    assert_consistent,
    blob_files,
    cache_mirror,
    key,
    lifecycle_of,
    tags,
    wait_for,
)
from tests.support.digests import sha256_bytes as sha
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.mirror import services_of
from tests.support.models import smollm2_gguf
from tests.support.postgres import both_databases

MB = 1_000_000
READ_CHUNK = 64 * 1024


class StalledReader:
    """A client that has begun a download and then stops reading, so the server's send is still
    in progress. A small receive buffer (no autotuning) keeps what the kernel can absorb far below
    the body's size."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes) -> None:
        self.reader, self.writer = reader, writer
        self.first = first  # the body's first READ_CHUNK bytes

    @classmethod
    async def start(cls, client, head: str, body: bytes = b"") -> StalledReader:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"{head} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        return cls(reader, writer, await reader.readexactly(READ_CHUNK))

    @classmethod
    async def blob(cls, client, name: str, weights: bytes) -> StalledReader:
        reader = await cls.start(client, f"GET /v2/library/{name}/blobs/{sha(weights)}")
        assert reader.first == weights[:READ_CHUNK]
        return reader

    async def finish(self) -> bytes:
        """Read the rest of the body (the server closes the connection after it)."""
        rest = await self.reader.read()
        self.writer.close()
        return rest


async def big_over_quota_with(aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry,
                              database_url: str) -> tuple[TestClient, bytes]:
    """A mirror with a 14 MB quota holding "big" (12 MB); "small" (1 MB) is ready upstream, and
    pulling it puts the store over the high watermark with "big" least recently used."""
    big = add_model(fake_registry, "big", 12 * MB)
    add_model(fake_registry, "small", 1 * MB)
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False,
                                CORRAL_DATABASE_URL=database_url, CORRAL_MAX_CACHE="14MB",
                                CORRAL_CACHE_HIGH_WATERMARK="0.9", CORRAL_CACHE_LOW_WATERMARK="0.5")
    await api_pull(mirror, "big")
    return mirror, big


@both_databases
async def test_quota_evicts_least_recently_used_and_keeps_pinned_and_in_use(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry, database_url: str
) -> None:
    sizes = {"m1": 3 * MB, "m2": 12 * MB, **{f"m{i}": 4 * MB for i in range(3, 9)}}
    weights = {name: add_model(fake_registry, name, size) for name, size in sizes.items()}
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, CORRAL_DATABASE_URL=database_url,
                                CORRAL_MAX_CACHE="40MB", CORRAL_CACHE_HIGH_WATERMARK="0.9",
                                CORRAL_CACHE_LOW_WATERMARK="0.6")
    lifecycle = lifecycle_of(mirror)
    await api_pull(mirror, "m1")
    assert (await mirror.post("/api/corral/pin", json={"model": "m1"})).status == 200
    await api_pull(mirror, "m2")
    reader = await StalledReader.blob(mirror, "m2", weights["m2"])  # m2 is in use from here on
    assert Digest.parse(sha(weights["m2"])) in services_of(mirror).leases.held()
    for i in range(3, 9):
        await api_pull(mirror, f"m{i}")  # m8 takes the store past 36 MB, the high watermark

    async def pruned() -> bool:
        return lifecycle.pruner.last_run is not None and lifecycle.pruner.last_run["evicted"] > 0

    await wait_for(pruned)
    assert tags(tmp_path, database_url) == {key(n) for n in ("m1", "m2", "m7", "m8")}  # m3..m6: least recently used
    usage = await lifecycle.pruner.measure()
    assert usage.total <= 0.6 * 40 * MB
    assert_consistent(tmp_path, database_url)
    files = blob_files(tmp_path)
    for name in ("m3", "m4", "m5", "m6"):
        assert sha(weights[name]) not in files
    assert sha(b"{{ .Prompt }}") in files  # shared by the models that stay

    rest = await reader.finish()  # the stalled client finishes with the right bytes
    assert weights["m2"][:READ_CHUNK] + rest == weights["m2"]
    status = await (await mirror.get("/api/corral/status")).json()
    assert status["prune"]["evicted"] == 4
    assert {m["name"]: m["pinned"] for m in status["models"]}["m1:latest"] is True


@both_databases
async def test_reader_keeps_its_model_until_done_then_it_goes(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry, database_url: str
) -> None:
    mirror, big = await big_over_quota_with(aiohttp_client, tmp_path, fake_registry, database_url)
    lifecycle = lifecycle_of(mirror)
    reader = await StalledReader.blob(mirror, "big", big)
    await api_pull(mirror, "small")  # 13 MB: over the high watermark; "big" is least recently used

    events = [e async for e in lifecycle.pruner.run(dry_run=True)]
    assert [e["model"] for e in events if e["status"] == "evict"] == ["small:latest"]
    kept = {e["model"]: e["reason"] for e in events if e["status"] == "keep"}
    assert kept["big:latest"].startswith("in use:") and "being read" in kept["big:latest"]

    resp = await mirror.post("/api/corral/prune", json={})
    events = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [e["model"] for e in events if e["status"] == "evict"] == ["small:latest"]
    assert events[-1]["status"] == "success" and events[-1]["evicted"] == 1
    assert tags(tmp_path, database_url) == {key("big")}
    assert await reader.finish() == big[READ_CHUNK:]  # correct bytes to the end
    assert sha(big) in blob_files(tmp_path)

    await api_pull(mirror, "small")
    summary = [e async for e in lifecycle.pruner.run()][-1]
    assert summary["evicted"] == 1
    assert tags(tmp_path, database_url) == {key("small")}  # now that nobody reads it, the older model goes
    assert_consistent(tmp_path, database_url)


@pytest.mark.model
async def test_a_model_loaded_in_the_runner_is_kept_until_unloaded(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    """The runner reads the weights in place (mmap): evicting them under it is never allowed."""
    weights = smollm2_gguf().read_bytes()
    fake_registry.add_model("library/tiny", "latest",
                            [(MEDIA_MODEL, weights), (MEDIA_TEMPLATE, b"{{ .Prompt }}"), (MEDIA_PARAMS, b"{}")])
    add_model(fake_registry, "small", 1 * MB)
    quota = len(weights) + MB // 2  # both models together are over it
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False,
                                CORRAL_MAX_CACHE=str(quota), CORRAL_CACHE_HIGH_WATERMARK="0.9",
                                CORRAL_CACHE_LOW_WATERMARK="0.5")
    lifecycle = lifecycle_of(mirror)
    await api_pull(mirror, "tiny")
    load = await mirror.post("/api/generate", json={"model": "tiny", "keep_alive": -1})
    assert (await load.json())["done_reason"] == "load"
    await api_pull(mirror, "small")  # "tiny" is the least recently used model now

    events = [e async for e in lifecycle.pruner.run()]
    assert [e["model"] for e in events if e["status"] == "evict"] == ["small:latest"]
    kept = {e["model"]: e["reason"] for e in events if e["status"] == "keep"}
    assert "loaded in the runner" in kept["tiny:latest"]
    assert sha(weights) in blob_files(tmp_path)

    unload = await mirror.post("/api/generate", json={"model": "tiny", "keep_alive": 0})
    assert (await unload.json())["done_reason"] == "unload"
    await api_pull(mirror, "small")
    summary = [e async for e in lifecycle.pruner.run()][-1]
    assert summary["evicted"] == 1
    assert tags(tmp_path) == {key("small")}
    assert sha(weights) not in blob_files(tmp_path)
    assert_consistent(tmp_path)


async def test_a_bundle_being_exported_keeps_its_model(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry, database_url: str
) -> None:
    mirror, big = await big_over_quota_with(aiohttp_client, tmp_path, fake_registry, database_url)
    lifecycle = lifecycle_of(mirror)
    body = json.dumps({"models": ["big"]}).encode()
    reader = await StalledReader.start(mirror, "POST /api/corral/export", body)  # stalls on a full buffer
    await api_pull(mirror, "small")  # "big" is the least recently used model now

    events = [e async for e in lifecycle.pruner.run()]
    assert [e["model"] for e in events if e["status"] == "evict"] == ["small:latest"]
    kept = {e["model"]: e["reason"] for e in events if e["status"] == "keep"}
    assert "being read" in kept["big:latest"]

    bundle = reader.first + await reader.finish()
    assert big in bundle  # the weights went out whole (tar stores them unchanged)
    assert not services_of(mirror).leases.held()


def test_retire_waits_for_the_last_reader_and_spares_a_newer_copy(tmp_path: Path) -> None:
    leases = Leases()
    digest = Digest("ab" * 32)
    path = tmp_path / digest.filename
    path.write_bytes(b"old")
    lease = leases.acquire(digest)
    assert leases.retire(digest, path, inode_of(path)) is None  # a reader: deferred
    assert path.read_bytes() == b"old"
    lease.release()
    assert not path.exists()  # gone with the last release

    path.write_bytes(b"old")
    lease = leases.acquire(digest)
    leases.retire(digest, path, inode_of(path))
    newer = tmp_path / "newer"
    newer.write_bytes(b"new")
    newer.replace(path)  # a fill published a fresh copy meanwhile
    lease.release()
    assert path.read_bytes() == b"new"


def test_keep_list_names_and_globs() -> None:
    keep = KeepList(["gemma3", "llama3.2:*", "*/myteam/*"])
    assert keep.match(ModelName.parse("gemma3:latest")) == "gemma3"
    assert keep.match(ModelName.parse("registry.ollama.ai/library/gemma3")) == "gemma3"
    assert keep.match(ModelName.parse("gemma3:1b")) is None
    assert keep.match(ModelName.parse("llama3.2:3b")) == "llama3.2:*"
    assert keep.match(ModelName.parse("example.com/myteam/x:1")) == "*/myteam/*"
    assert keep.match(ModelName.parse("qwen3")) is None
