"""Bundles: export → import round trip, incremental export, signatures, and refusal of truncated
or tampered bundles with nothing imported."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient

from registry.airgap.bundle_index import INDEX_NAME, BundleIndex
from registry.auth.keys import load_or_create_key
from registry.server.app import create_app
from registry.server.services import SERVICES
from tests.registry.conftest import make_settings
from tests.support.airgap import add_model, authorize, corral, internet_side, sha
from tests.support.models import smollm2_gguf, write_modelfile
from tests.support.server import ServerProcess, start_server

ClientFactory = Callable[..., Awaitable[TestClient]]
TargetFactory = Callable[..., Awaitable[TestClient]]
WEIGHTS = bytes(range(256)) * 4000 + b"tail"


@pytest.fixture
async def source(aiohttp_client: ClientFactory, tmp_path: Path) -> TestClient:
    client = await aiohttp_client(await create_app(make_settings(tmp_path / "internet")))
    await add_model(client, "tiny:1b", WEIGHTS)
    await add_model(client, "tiny:chat", WEIGHTS, template=b"{{ .System }} {{ .Prompt }}")
    return client


@pytest.fixture
def target_factory(aiohttp_client: ClientFactory, tmp_path: Path) -> TargetFactory:
    async def make(name: str = "airgap", **env: str) -> TestClient:
        return await aiohttp_client(await create_app(make_settings(tmp_path / name, **env)))
    return make


async def export(client: TestClient, *models: str, exclude: tuple[str, ...] = (), sign: bool = False) -> bytes:
    resp = await client.post("/api/corral/export", json={"models": list(models), "exclude": list(exclude),
                                                          "sign": sign})
    assert resp.status == 200, await resp.text()
    body = await resp.read()
    assert len(body) == resp.content_length
    return body


async def import_(client: TestClient, bundle: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """Events and the error message (from the status or the last NDJSON line)."""
    resp = await client.post("/api/corral/import", data=bundle)
    if resp.status != 200:
        return [], (await resp.json())["error"]
    events = [json.loads(line) for line in (await resp.text()).splitlines() if line.strip()]
    return events, events[-1].get("error")


async def stored(client: TestClient) -> tuple[list[str], list[str]]:
    """Model names and blob files of a corral: what an import may have left behind."""
    services = client.server.app[SERVICES]
    names = sorted(r.name.display_shortest() for r in await services.catalog.list_models())
    leftovers = [p.name for p in services.settings.scratch_dir.iterdir() if p.name.startswith("import-")]
    return names, sorted(p.name for p in services.store.root.iterdir()) + leftovers


def members(bundle: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def retar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def test_round_trip(source: TestClient, target_factory: TargetFactory) -> None:
    bundle = await export(source, "tiny:1b", "tiny:chat")
    names = [m.name for m, _ in members(bundle)]
    assert names[0] == INDEX_NAME and names.count(f"blobs/{sha(WEIGHTS).replace(':', '-')}") == 1
    index = BundleIndex.parse(members(bundle)[0][1])
    assert {str(n) for n, _ in index.models} == {"registry.ollama.ai/library/tiny:1b",
                                                  "registry.ollama.ai/library/tiny:chat"}
    assert all(b.included for b in index.blobs) and index.corral

    target = await target_factory()
    events, error = await import_(target, bundle)
    assert error is None and events[-1]["status"] == "success"
    assert events[-1]["blobs_added"] == len(index.blobs)
    for tag in ("1b", "chat"):
        here = await (await target.get(f"/v2/library/tiny/manifests/{tag}")).read()
        there = await (await source.get(f"/v2/library/tiny/manifests/{tag}")).read()
        assert here == there
    assert await (await target.get(f"/v2/library/tiny/blobs/{sha(WEIGHTS)}")).read() == WEIGHTS
    again, error = await import_(target, bundle)
    assert error is None and again[-1]["blobs_added"] == 0 and again[-1]["blobs_skipped"] == len(index.blobs)


async def test_incremental_export(source: TestClient, target_factory: TargetFactory) -> None:
    first = await export(source, "tiny:1b")
    previous = BundleIndex.parse(members(first)[0][1])
    second = await export(source, "tiny:chat", exclude=tuple(str(d) for d in previous.digests()))
    assert len(second) < len(WEIGHTS)
    assert not any(m.name.endswith(sha(WEIGHTS)[7:]) for m, _ in members(second))

    fresh = await target_factory("fresh")
    _, error = await import_(fresh, second)
    assert error and "left out" in error and sha(WEIGHTS) in error
    assert await stored(fresh) == ([], [])

    target = await target_factory()
    for bundle in (first, second):
        _, error = await import_(target, bundle)
        assert error is None, error
    assert (await stored(target))[0] == ["tiny:1b", "tiny:chat"]


async def test_signed_bundles(source: TestClient, target_factory: TargetFactory, tmp_path: Path) -> None:
    signed = await export(source, "tiny:1b", sign=True)
    assert [m.name for m, _ in members(signed)][:2] == [INDEX_NAME, "corral-bundle.sig"]
    source_key = load_or_create_key(source.server.app[SERVICES].settings.key_path)

    strict = await target_factory("strict", CORRAL_REQUIRE_SIGNED="1")
    _, error = await import_(strict, await export(source, "tiny:1b"))
    assert error and "not signed" in error
    _, error = await import_(strict, signed)
    assert error and "not in authorized_keys" in error
    authorize(tmp_path / "strict" / "models", source_key)
    events, error = await import_(strict, signed)
    assert error is None and "signed by ssh-ed25519" in events[0]["status"]

    entries = members(signed)
    index = json.loads(entries[0][1])
    index["models"][0]["name"] = "registry.ollama.ai/library/evil:latest"
    entries[0] = (entries[0][0], json.dumps(index).encode())
    other = await target_factory("other")
    authorize(tmp_path / "other" / "models", source_key)
    _, error = await import_(other, retar(entries))
    assert error and "corral-bundle.sig" in error and "does not verify" in error
    assert await stored(other) == ([], [])


def _flip_weights_byte(bundle: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(sha(WEIGHTS)[7:]))
    data = bytearray(bundle)
    data[member.offset_data + 1000] ^= 0x01
    return bytes(data)


def _extra_file(bundle: bytes) -> bytes:
    entries = members(bundle)
    return retar([*entries[:2], (tarfile.TarInfo("notes.txt"), b"hello"), *entries[2:]])


def _traversal(bundle: bytes) -> bytes:
    entries = members(bundle)
    info, data = entries[-1]
    info.name = "blobs/../../../tmp/" + info.name.split("/")[-1]
    return retar([*entries[:-1], (info, data)])


@pytest.mark.parametrize(("tamper", "message"), [
    (_flip_weights_byte, "digest mismatch"),
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:-1], "truncated in its end-of-archive marker"),
    (lambda b: b[:-512], "truncated in its end-of-archive marker"),
    (lambda b: b[:-1] + b"x", "invalid end-of-archive marker"),
    (_extra_file, "entry 'notes.txt' is not listed"),
    (_traversal, "entry 'blobs/../../../tmp/"),
    (lambda b: b"hello\n", "not a tar archive: shorter than one tar header"),
    (lambda b: b"{" * 4096, "not a tar archive: its first block is no tar header"),
], ids=["flipped-byte", "truncated", "last-byte-missing", "last-block-missing", "end-marker-not-zero",
        "extra-file", "path-traversal", "a-text-file", "not-a-tar"])
async def test_tampered_bundle_imports_nothing(source: TestClient, target_factory: TargetFactory,
                                               tamper: Callable[[bytes], bytes],
                                               message: str) -> None:
    bundle = tamper(await export(source, "tiny:1b", "tiny:chat"))
    target = await target_factory()
    _, error = await import_(target, bundle)
    assert error is not None and "nothing imported" in error and message in error, error
    assert await stored(target) == ([], [])


# ---- the CLI between two corral processes --------------------------------------------------------

@pytest.fixture(scope="module")
def internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = internet_side(tmp_path_factory.mktemp("internet"))
    yield server
    server.stop()


def test_cli_signed_and_incremental_bundles(internet: ServerProcess, tmp_path: Path) -> None:
    airgap = start_server(tmp_path / "airgap", {"CORRAL_REQUIRE_SIGNED": "1"})
    try:
        first = tmp_path / "first.tar"
        exported = corral(internet, "export", "smollm2", "-o", str(first), "--sign")
        assert exported.returncode == 0, exported.stderr
        assert first.stat().st_size > smollm2_gguf().stat().st_size

        refused = corral(airgap, "import", str(first))
        assert refused.returncode == 1 and "not in authorized_keys" in refused.stderr
        assert "nothing imported" in refused.stderr
        assert corral(airgap, "authorize", corral(internet, "key").stdout.strip()).returncode == 0
        imported = corral(airgap, "import", str(first))
        assert imported.returncode == 0, imported.stderr
        assert "imported: smollm2:latest" in imported.stdout

        (tmp_path / "terse").mkdir()
        created = corral(internet, "create", "smollm2:terse", "-f",
                         str(write_modelfile(tmp_path / "terse", system="Answer in one word.")))
        assert created.returncode == 0, created.stderr
        second = tmp_path / "second.tar"
        exported = corral(internet, "export", "smollm2:terse", "-o", str(second), "--since", str(first), "--sign")
        assert exported.returncode == 0, exported.stderr
        assert second.stat().st_size < 100_000  # the weights stayed behind
        imported = corral(airgap, "import", str(second))
        assert imported.returncode == 0, imported.stderr

        there = {m["name"]: m["digest"] for m in httpx.get(airgap.url + "/api/tags").json()["models"]}
        here = {m["name"]: m["digest"] for m in httpx.get(internet.url + "/api/tags").json()["models"]}
        assert there == here

        truncated = tmp_path / "truncated.tar"
        truncated.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
        refused = corral(airgap, "import", str(truncated))
        assert refused.returncode == 1 and "truncated" in refused.stderr, refused.stderr
    finally:
        airgap.stop()
