"""The upstream client against a registry.ollama.ai stand-in: policy, auth, redirects, resume."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.auth.keys import load_or_create_key, public_key_line
from registry.config import Settings
from registry.egress.gate import Egress, HostNotAllowed, Offline
from registry.mirror.upstream import (
    BlobSource,
    Refused,
    Unavailable,
    Upstream,
    default_user_agent,
)
from registry.model.names import Digest, ModelName
from tests.support.fake_ollama_registry import GATE_MESSAGE, FakeOllamaRegistry
from tests.support.mirror import FAST_POLICY, mirror_settings
from tests.support.server import free_port

BLOB = bytes(range(256)) * 1200  # 307,200 bytes


def make_upstream(settings: Settings) -> Upstream:
    return Upstream(settings, load_or_create_key(settings.key_path), Egress(settings), FAST_POLICY)


@pytest.fixture
async def upstream(tmp_path: Path, fake_registry: FakeOllamaRegistry) -> AsyncIterator[Upstream]:
    settings = mirror_settings(tmp_path, fake_registry.url,
                               CORRAL_ALLOWED_HOSTS=f"mirror.example:8443,{fake_registry.cdn_host}")
    client = make_upstream(settings)
    yield client
    await client.close()


def source(registry: FakeOllamaRegistry, upstream: Upstream, data: bytes) -> BlobSource:
    digest = Digest(hashlib.sha256(data).hexdigest())
    return BlobSource(upstream.default, "library/m", digest, default_user_agent())


class Collect:
    """A sink keeping every byte, with small buffers so that a blob takes many of them."""

    def __init__(self) -> None:
        self.out = bytearray()

    async def buffer(self) -> bytearray:
        return bytearray(16 * 1024)

    async def deliver(self, buffer: bytearray, n: int) -> None:
        self.out += buffer[:n]


async def fetch_all(upstream: Upstream, src: BlobSource, size: int) -> bytes:
    sink = Collect()
    await upstream.fetch_range(src, 0, size, sink)
    return bytes(sink.out)


def test_names_resolve_to_allowed_registries_only(upstream: Upstream, fake_registry: FakeOllamaRegistry) -> None:
    assert upstream.endpoint_for(ModelName.parse("smollm2")) == upstream.default
    assert upstream.endpoint_for(ModelName.parse("registry.ollama.ai/jdoe/m:1")) == upstream.default
    assert upstream.endpoint_for(ModelName.parse(f"{fake_registry.host}/library/m")) == upstream.default
    allowed = ModelName.parse("mirror.example:8443/library/m")
    assert upstream.endpoint_for(allowed).base == "https://mirror.example:8443"
    assert upstream.endpoint_for(allowed, insecure=True).base == "http://mirror.example:8443"
    for name in ("evil.example/x/y", "127.0.0.1:1/x/y", "registry.ollama.ai.evil.example/x/y"):
        with pytest.raises(HostNotAllowed):
            upstream.endpoint_for(ModelName.parse(name))
    with pytest.raises(HostNotAllowed):
        upstream.egress.check_registry("http://169.254.169.254/latest/meta-data")


async def test_offline_never_connects(tmp_path: Path) -> None:
    settings = mirror_settings(tmp_path, f"http://127.0.0.1:{free_port()}", CORRAL_OFFLINE="1")
    client = make_upstream(settings)
    try:
        with pytest.raises(Offline):
            await client.fetch_manifest(client.default, "library/m", "latest", default_user_agent())
    finally:
        await client.close()


async def test_key_is_openssh_ed25519_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    key = load_or_create_key(path)
    assert path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    assert public_key_line(load_or_create_key(path)) == public_key_line(key)


async def test_manifest_gate_passes_412_through(upstream: Upstream, fake_registry: FakeOllamaRegistry) -> None:
    raw = fake_registry.add_model("library/m", "latest", [("application/vnd.ollama.image.model", BLOB)])
    fake_registry.min_version = (0, 30, 0)
    with pytest.raises(Refused) as refused:
        await upstream.fetch_manifest(upstream.default, "library/m", "latest", "ollama/0.5.7 (amd64 linux) Go/1.23")
    assert refused.value.status == 412
    assert refused.value.body.decode() == GATE_MESSAGE
    newer = "ollama/0.33.0 (amd64 linux) Go/go1.24.0"
    assert await upstream.fetch_manifest(upstream.default, "library/m", "latest", newer) == raw
    assert fake_registry.registry_requests("manifests")[-1].user_agent == newer
    with pytest.raises(Refused) as missing:
        await upstream.fetch_manifest(upstream.default, "library/nope", "latest", newer)
    assert missing.value.status == 404


async def test_bearer_challenge_is_answered_with_a_signed_token_request(
    upstream: Upstream, fake_registry: FakeOllamaRegistry
) -> None:
    raw = fake_registry.add_model("library/m", "latest", [("application/vnd.ollama.image.model", BLOB)])
    fake_registry.require_token = True
    assert await upstream.fetch_manifest(upstream.default, "library/m", "latest", default_user_agent()) == raw
    assert await upstream.fetch_manifest(upstream.default, "library/m", "latest", default_user_agent()) == raw
    (request,) = fake_registry.token_requests  # the token is reused
    assert request.valid
    assert request.public_key == public_key_line(upstream.key).split()[1]
    assert request.query["scope"] == ["repository:library/m:pull"] and request.query["service"] == ["ollama"]
    src = source(fake_registry, upstream, BLOB)
    assert await fetch_all(upstream, src, len(BLOB)) == BLOB
    assert not any(e.authorization for e in fake_registry.log if e.host == "cdn")  # no token to the CDN


async def test_blob_follows_307_to_the_cdn(upstream: Upstream, fake_registry: FakeOllamaRegistry) -> None:
    fake_registry.add_model("library/m", "latest", [("application/vnd.ollama.image.model", BLOB)])
    src = source(fake_registry, upstream, BLOB)
    assert await fetch_all(upstream, src, len(BLOB)) == BLOB
    (get,) = fake_registry.cdn_gets(str(src.digest))
    assert get.status == 206 and get.sent == len(BLOB)


@pytest.mark.parametrize("fault", ["truncate", "reset", "stall"])
async def test_broken_transfers_resume_with_range(
    upstream: Upstream, fake_registry: FakeOllamaRegistry, fault: str
) -> None:
    fake_registry.add_model("library/m", "latest", [("application/vnd.ollama.image.model", BLOB)])
    src = source(fake_registry, upstream, BLOB)
    fake_registry.cdn_faults = [fault]
    assert await fetch_all(upstream, src, len(BLOB)) == BLOB
    first, second = fake_registry.cdn_gets(str(src.digest))
    assert first.range == f"bytes=0-{len(BLOB) - 1}"
    assert second.range == f"bytes={first.sent}-{len(BLOB) - 1}"  # resumed exactly where it broke
    assert first.sent + second.sent == len(BLOB)


async def test_a_chunked_body_is_read_whole(upstream: Upstream, fake_registry: FakeOllamaRegistry) -> None:
    """HTTP chunk boundaries inside a body are not its end (some CDNs and proxies send chunked)."""
    fake_registry.add_model("library/m", "latest", [("application/vnd.ollama.image.model", BLOB)])
    src = source(fake_registry, upstream, BLOB)
    fake_registry.cdn_faults = ["chunked"]
    assert await fetch_all(upstream, src, len(BLOB)) == BLOB
    (get,) = fake_registry.cdn_gets(str(src.digest))  # one request: no boundary was taken for a cut
    assert get.sent == len(BLOB)


async def test_expired_data_url_is_resolved_again(upstream: Upstream, fake_registry: FakeOllamaRegistry) -> None:
    fake_registry.add_model("library/m", "latest", [("application/vnd.ollama.image.model", BLOB)])
    src = source(fake_registry, upstream, BLOB)
    fake_registry.cdn_faults = ["truncate", "expire"]
    assert await fetch_all(upstream, src, len(BLOB)) == BLOB
    resolves = [e for e in fake_registry.registry_requests("blobs") if e.method == "GET"]
    assert len(resolves) == 2
    assert sum(e.sent for e in fake_registry.cdn_gets(str(src.digest))) == len(BLOB)


async def test_unknown_blob_is_refused_and_dead_upstream_unavailable(
    upstream: Upstream, fake_registry: FakeOllamaRegistry, tmp_path: Path
) -> None:
    with pytest.raises(Refused) as refused:
        await fetch_all(upstream, source(fake_registry, upstream, b"not there"), 9)
    assert refused.value.status == 404
    dead_settings = mirror_settings(tmp_path / "dead", f"http://127.0.0.1:{free_port()}")
    dead = make_upstream(dead_settings)
    try:
        with pytest.raises(Unavailable, match=r"127\.0\.0\.1"):
            await dead.fetch_manifest(dead.default, "library/m", "latest", default_user_agent())
        with pytest.raises(Unavailable):
            await fetch_all(dead, BlobSource(dead.default, "library/m", Digest("0" * 64), "x"), 10)
    finally:
        await dead.close()
