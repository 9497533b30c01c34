"""The mirror end to end: a real `corral serve` in front of a real Docker distribution registry.

The upstream is Debian's docker-registry on loopback holding SmolLM2 in ollama's manifest format;
clients are the legacy-ollama emulator. The registry's access log is the ground truth for what
went upstream.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from registry.model.manifest import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_TEMPLATE
from tests.support.digests import sha256_file
from tests.support.docker_registry import DockerRegistry, push_model, start_registry
from tests.support.legacy_pull import OLLAMA_UA, LegacyPuller, PullError
from tests.support.models import CHATML_TEMPLATE, smollm2_gguf
from tests.support.server import ServerProcess, run_cli, start_server

PARAMS = b'{"stop":["<|im_start|>","<|im_end|>"],"temperature":0.2}'


@dataclass
class Upstream:
    registry: DockerRegistry
    manifest: bytes
    gguf_digest: str
    gguf_size: int

    @property
    def total(self) -> int:
        doc = json.loads(self.manifest)
        return sum(layer["size"] for layer in doc["layers"]) + doc["config"]["size"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    registry = start_registry(tmp_path_factory.mktemp("upstream"))
    try:
        gguf = smollm2_gguf()
        raw = push_model(registry.url, "library/smollm2", "135m",
                         [(MEDIA_MODEL, gguf), (MEDIA_TEMPLATE, CHATML_TEMPLATE.encode()), (MEDIA_PARAMS, PARAMS)])
        yield Upstream(registry, raw, sha256_file(gguf), gguf.stat().st_size)
    finally:
        registry.stop()


def mirror(root: Path, upstream_url: str, **env: str) -> ServerProcess:
    return start_server(root, extra_env={"CORRAL_OFFLINE": "0", "CORRAL_UPSTREAM": upstream_url, **env})


def legacy_pull(server: ServerProcess, dest: Path, repository: str = "library/smollm2", tag: str = "135m",
                min_part: int = 16_000_000):
    return asyncio.run(LegacyPuller(server.url, dest, min_part=min_part).pull(repository, tag))


def test_eight_cold_clients_one_upstream_transfer_then_warm(upstream: Upstream, tmp_path: Path) -> None:
    before = len(upstream.registry.accesses())
    server = mirror(tmp_path / "corral", upstream.registry.url)
    try:
        async def eight() -> list:
            pullers = [LegacyPuller(server.url, tmp_path / f"client{i}", min_part=32_000_000) for i in range(8)]
            return await asyncio.gather(*(p.pull("library/smollm2", "135m") for p in pullers))

        cold = asyncio.run(eight())
        gguf = smollm2_gguf().read_bytes()
        for result in cold:
            assert result.manifest_raw == upstream.manifest
            assert result.blobs[upstream.gguf_digest].read_bytes() == gguf
            for digest, path in result.blobs.items():
                assert sha256_file(path) == digest
        went_up = upstream.registry.accesses()[before:]
        blob_gets = [a for a in went_up if a.method == "GET" and "/blobs/" in a.path]
        assert sum(a.bytes for a in blob_gets) == upstream.total  # 1.0 × the model, for 8 clients
        assert len([a for a in blob_gets if a.path.endswith(upstream.gguf_digest)]) == 1
        assert len([a for a in went_up if "/manifests/" in a.path]) == 1
        for result in cold:
            for path in result.blobs.values():
                path.unlink()  # keep the disk footprint of the test small
        mark = len(upstream.registry.accesses())
        warm = legacy_pull(server, tmp_path / "warm")
        assert warm.manifest_raw == upstream.manifest
        assert warm.blobs[upstream.gguf_digest].read_bytes() == gguf
        assert not [a for a in upstream.registry.accesses()[mark:] if "/blobs/" in a.path]
    finally:
        server.stop()


def test_a_model_pulled_through_v2_and_by_corral_pull_is_one_model(upstream: Upstream, tmp_path: Path) -> None:
    """With CORRAL_UPSTREAM naming another registry, `/v2/library/smollm2/…` and `corral pull
    smollm2:135m` store one name, so pin, rm and the quota see one model."""
    server = mirror(tmp_path / "corral", upstream.registry.url)
    try:
        legacy_pull(server, tmp_path / "client")
        pulled = run_cli(server, "pull", "smollm2:135m")
        assert pulled.returncode == 0, pulled.stderr
        tags = httpx.get(server.url + "/api/tags").json()["models"]
        assert [(m["name"], m["size"]) for m in tags] == [("smollm2:135m", upstream.total)]
        assert run_cli(server, "pin", "smollm2:135m").returncode == 0
        status = httpx.get(server.url + "/api/corral/status").json()
        assert [(m["name"], m["pinned"]) for m in status["models"]] == [("smollm2:135m", True)]
        assert status["cache"]["stored"] == upstream.total  # one model's blobs, counted once
        removed = run_cli(server, "rm", "smollm2:135m")
        assert removed.returncode == 0, removed.stderr
        assert httpx.get(server.url + "/api/tags").json()["models"] == []
    finally:
        server.stop()


def saved_progress(root: Path, digest: str) -> int:
    with sqlite3.connect(root / "corral.db") as db:
        row = db.execute("select segments from fills where digest = ?", (digest,)).fetchone()
    return sum(done for _, _, done in json.loads(row[0])) if row else 0


def test_kill_9_mid_fill_resumes_with_range(upstream: Upstream, tmp_path: Path) -> None:
    root = tmp_path / "corral"
    server = mirror(root, upstream.registry.url, CORRAL_UPSTREAM_RATE="10MB")
    blob_url = f"{server.url}/v2/library/smollm2/blobs/{upstream.gguf_digest}"

    def reader() -> None:
        with httpx.Client(timeout=60) as client:
            client.get(f"{server.url}/v2/library/smollm2/manifests/135m", headers={"User-Agent": OLLAMA_UA})
            try:
                with client.stream("GET", blob_url) as resp:
                    for _ in resp.iter_bytes():
                        pass
            except httpx.HTTPError:
                pass  # the server is killed under it

    before = len(upstream.registry.accesses())
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while saved_progress(root, upstream.gguf_digest) < 15_000_000:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        server.stop(signal.SIGKILL)
    finally:
        thread.join()
    persisted = saved_progress(root, upstream.gguf_digest)
    assert 0 < persisted < upstream.gguf_size
    first_run = len(upstream.registry.accesses())
    server = mirror(root, upstream.registry.url)
    try:
        pulled = legacy_pull(server, tmp_path / "client")
        assert sha256_file(pulled.blobs[upstream.gguf_digest]) == upstream.gguf_digest
    finally:
        server.stop()
    assert saved_progress(root, upstream.gguf_digest) == 0
    resumed = [a for a in upstream.registry.accesses()[first_run:] if a.path.endswith(upstream.gguf_digest)]
    assert [(a.method, a.status, a.bytes) for a in resumed] == [("GET", 206, upstream.gguf_size - persisted)]
    killed = [a for a in upstream.registry.accesses()[before:first_run] if a.path.endswith(upstream.gguf_digest)]
    assert sum(a.bytes for a in killed) >= persisted


def test_upstream_down_and_offline(tmp_path: Path) -> None:
    registry = start_registry(tmp_path / "upstream")
    root = tmp_path / "corral"
    try:
        push_model(registry.url, "library/tiny", "latest", [(MEDIA_MODEL, b"GGUF" + bytes(range(256)) * 64)])
        server = mirror(root, registry.url, CORRAL_MANIFEST_TTL="0s")
        try:
            cli = run_cli(server, "pull", "tiny")  # the model /v2/library/tiny names
            assert cli.returncode == 0, cli.stderr
            assert "pulling manifest" in cli.stderr and "success" in cli.stderr
            registry.stop()  # upstream goes down: cached content still flows, the rest is a clear 502
            pulled = legacy_pull(server, tmp_path / "stale", "library/tiny", "latest")
            assert len(pulled.blobs) == 2
            cached = httpx.post(f"{server.url}/api/pull", json={"model": "tiny", "stream": False}, timeout=60)
            assert cached.json() == {"status": "success"}
            with pytest.raises(PullError, match=r"502.*unavailable"):
                legacy_pull(server, tmp_path / "none", "library/other", "latest")
            missing = httpx.post(f"{server.url}/api/pull", json={"model": "other", "stream": False}, timeout=60)
            assert missing.status_code == 502 and registry.url in missing.json()["error"]
            assert "serving cached" in server.log()
        finally:
            server.stop()
        server = mirror(root, registry.url, CORRAL_OFFLINE="1")
        try:
            assert len(legacy_pull(server, tmp_path / "offline", "library/tiny", "latest").blobs) == 2
            with pytest.raises(PullError, match="file does not exist"):
                legacy_pull(server, tmp_path / "none", "library/other", "latest")
            missing = httpx.post(f"{server.url}/api/pull", json={"model": "other", "stream": False}, timeout=60)
            assert missing.status_code == 503 and "CORRAL_OFFLINE" in missing.json()["error"]
        finally:
            server.stop()
    finally:
        registry.stop()
