"""Cold fills across the nodes of a cluster, with real processes: `corral serve` nodes on one real
PostgreSQL catalogue and one shared models folder, Debian's docker-registry upstream (rate-limited
by corral's own CORRAL_UPSTREAM_RATE, so a fill lasts seconds). One node fetches each blob while
clients of every node are served from its progress; when it is killed (-9) or stopped mid-fill,
another node resumes from the last checkpoint and fetches only what was not saved."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from registry.model.manifest import MEDIA_MODEL, MEDIA_TEMPLATE
from tests.support.digests import sha256_bytes as sha
from tests.support.docker_registry import DockerRegistry, push_model, start_registry
from tests.support.legacy_pull import LegacyPuller
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, start_server, wait_until

MB = 1_000_000
HEARTBEAT = 0.3
WEIGHTS = 24 * MB
RESUMED = re.compile(r"resuming fill of \w+ at (\d+) of (\d+) bytes")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DockerRegistry, bytes]]:
    registry = start_registry(tmp_path_factory.mktemp("upstream"))
    weights = random.Random(1818).randbytes(WEIGHTS)
    try:
        for repository in ("library/fanout", "library/killed", "library/stopped"):
            push_model(registry.url, repository, "latest", [(MEDIA_MODEL, weights if repository == "library/fanout"
                                                             else random.Random(repository).randbytes(WEIGHTS)),
                                                            (MEDIA_TEMPLATE, b"{{ .Prompt }}")])
        yield registry, weights
    finally:
        registry.stop()


def start_node(root: Path, shared: Path, url: str, name: str, registry: DockerRegistry, rate: str) -> ServerProcess:
    return start_server(root / name, {
        "OLLAMA_MODELS": str(shared), "CORRAL_DATABASE_URL": url, "CORRAL_CLUSTER": "1", "CORRAL_NODE_NAME": name,
        "CORRAL_OWNER_HEARTBEAT": f"{HEARTBEAT}s", "CORRAL_OFFLINE": "0", "CORRAL_UPSTREAM": registry.url,
        "CORRAL_UPSTREAM_RATE": rate,
    })


@pytest.fixture
def cluster(postgres: PostgresServer, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Starts nodes on one new catalogue and one shared folder; stops them all at the end."""
    url = postgres.new_database()
    started: list[ServerProcess] = []

    def start(name: str, registry: DockerRegistry, rate: str) -> ServerProcess:
        node = start_node(tmp_path, tmp_path / "shared", url, name, registry, rate)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def weights_digest(registry: DockerRegistry, repository: str) -> str:
    manifest = httpx.get(f"{registry.url}/v2/{repository}/manifests/latest", timeout=30, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    return manifest["layers"][0]["digest"]


def fill_of(node: ServerProcess, digest: str) -> dict | None:
    fills = httpx.get(f"{node.url}/api/corral/status", timeout=30).json()["fills"]
    return next((f for f in fills if f["digest"] == digest), None)


def fetched_by(registry: DockerRegistry, digest: str, since: int) -> int:
    """Bytes of `digest` the upstream sent in the requests it logged after the first `since`."""
    return sum(a.bytes for a in registry.accesses()[since:] if a.method == "GET" and a.path.endswith(digest))


class Download(threading.Thread):
    """A client reading a whole blob in one GET, hashing it; `error` is set when it was cut off."""

    def __init__(self, node: ServerProcess, repository: str, digest: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{node.url}/v2/{repository}/blobs/{digest}"
        self.received = 0
        self.sha256 = hashlib.sha256()
        self.error: Exception | None = None
        httpx.get(f"{node.url}/v2/{repository}/manifests/latest", timeout=30).raise_for_status()
        self.start()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=60) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    self.received += len(chunk)
                    self.sha256.update(chunk)
        except httpx.HTTPError as exc:
            self.error = exc

    def digest(self) -> str:
        self.join(120)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
        return "sha256:" + self.sha256.hexdigest()


def test_eight_clients_on_three_nodes_cost_the_upstream_one_copy(
        cluster: Callable[..., ServerProcess], tmp_path: Path, upstream: tuple[DockerRegistry, bytes]) -> None:
    registry, weights = upstream
    nodes = [cluster(name, registry, "8MB") for name in ("a", "b", "c")]  # a fill of 3 s: the clients overlap

    async def pull_all() -> list[bytes]:
        pullers = [LegacyPuller(nodes[i % 3].url, tmp_path / f"client-{i}") for i in range(8)]
        pulled = await asyncio.gather(*(p.pull("library/fanout", "latest") for p in pullers))
        return [model.blobs[sha(weights)].read_bytes() for model in pulled]

    assert all(sha(got) == sha(weights) for got in asyncio.run(pull_all()))
    assert registry.blob_bytes_sent(sha(weights)) == len(weights)  # 1.000×
    logs = [node.log() for node in nodes]
    assert sum(f"filled {sha(weights)[7:19]}" in log for log in logs) == 1  # one node fetched it
    followed = [log for log in logs if "following the fill of" in log]
    assert len(followed) == 2, logs  # the other two served their clients from its progress


def test_kill_9_of_the_owner_mid_fill_another_node_resumes_from_its_checkpoint(
        cluster: Callable[..., ServerProcess], upstream: tuple[DockerRegistry, bytes]) -> None:
    registry, _ = upstream
    digest = weights_digest(registry, "library/killed")
    a, b = cluster("a", registry, "4MB"), cluster("b", registry, "4MB")
    on_a = Download(a, "library/killed", digest)  # a takes the fill
    wait_until(lambda: (fill_of(a, digest) or {}).get("completed"))
    on_b = Download(b, "library/killed", digest)  # b follows a's checkpoints
    wait_until(lambda: (fill_of(b, digest) or {}).get("completed", 0) >= 4 * MB)
    followed = fill_of(b, digest)
    assert followed["fetched_by"] == "a"
    assert "(fetched by node a)" in httpx.get(f"{b.url}/corral", timeout=30).text
    assert on_b.received > 0  # b's client is being served while a fetches

    a.stop(signal.SIGKILL)
    with pytest.raises(httpx.HTTPError):
        on_a.digest()  # cut short: a's client never sees a complete-looking body
    wait_until(lambda: "taking over the fill of" in b.log())
    before = len(registry.accesses())  # a's cut request is logged by now: what follows is b's
    assert on_b.digest() == digest  # the same response, finished by b, verified before its last byte

    resumed_at = int(RESUMED.search(b.log())[1])
    assert resumed_at >= followed["completed"]  # not from scratch: from a's last checkpoint
    # b fetched exactly what a had not saved. (The upstream's count for a's cut request is larger
    # than a's progress: with the rate limited on the receiving side, it includes what sat unread
    # in the sockets' buffers when a died.)
    assert fetched_by(registry, digest, since=before) == WEIGHTS - resumed_at
    assert Download(b, "library/killed", digest).digest() == digest  # a client that retries gets verified bytes


def test_a_node_stopped_mid_fill_hands_it_over_at_once(
        cluster: Callable[..., ServerProcess], upstream: tuple[DockerRegistry, bytes]) -> None:
    registry, _ = upstream
    digest = weights_digest(registry, "library/stopped")
    a, b = cluster("a", registry, "4MB"), cluster("b", registry, "4MB")
    httpx.get(f"{a.url}/v2/library/stopped/manifests/latest", timeout=30).raise_for_status()
    with httpx.stream("GET", f"{a.url}/v2/library/stopped/blobs/{digest}", timeout=30) as started:
        assert started.status_code == 200  # left after the headers: a's fill goes on, and a has no client to drain
    wait_until(lambda: (fill_of(a, digest) or {}).get("completed"))
    on_b = Download(b, "library/stopped", digest)
    wait_until(lambda: (fill_of(b, digest) or {}).get("completed", 0) >= 2 * MB)
    seen = fill_of(b, digest)["completed"]
    a.stop()  # a clean stop saves its progress and releases the fill: b resumes without waiting for a to look dead
    before = len(registry.accesses())
    assert on_b.digest() == digest
    assert "taking up the fill of" in b.log() and "taking over" not in b.log()
    resumed_at = int(RESUMED.search(b.log())[1])
    assert resumed_at >= seen
    assert fetched_by(registry, digest, since=before) == WEIGHTS - resumed_at
