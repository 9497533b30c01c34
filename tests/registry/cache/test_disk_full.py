"""A store on a small filesystem of its own (a 64 MB tmpfs; mounting one needs root): the disk is a
quota even when none is set, a blob that cannot fit is refused before a byte is fetched, and a disk
that fills up in the middle of a fill ends it cleanly, with the room given back."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.model.names import Digest
from registry.storage.disk import DISK_FULL_MESSAGE
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
from tests.support.legacy_pull import OLLAMA_UA
from tests.support.mirror import services_of
from tests.support.models import write_gguf

MB = 1_000_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:  # not root, or a container without CAP_SYS_ADMIN
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


async def pull_error(mirror, name: str) -> str:
    resp = await mirror.post("/api/pull", json={"model": name, "stream": False})
    body = await resp.json()
    assert "error" in body, body
    return body["error"]


def fill_up(directory: Path) -> Path:
    """Write a file until the filesystem refuses more."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * (1 << 20)
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


async def test_without_a_quota_the_disk_is_one(
    small_disk: Path, aiohttp_client, fake_registry: FakeOllamaRegistry
) -> None:
    weights = {name: add_model(fake_registry, name, 20 * MB) for name in ("a", "b", "c")}
    mirror = await cache_mirror(aiohttp_client, small_disk, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False)
    await api_pull(mirror, "a")
    await api_pull(mirror, "b")
    await api_pull(mirror, "c")  # 60 MB on a 64 MB disk: "a", least recently used, made room
    assert tags(small_disk) == {key("b"), key("c")}
    assert sha(weights["a"]) not in blob_files(small_disk)
    assert lifecycle_of(mirror).pruner.last_run["evicted"] == 1
    assert_consistent(small_disk)


async def test_a_blob_the_disk_cannot_hold_is_refused_before_it_is_fetched(
    small_disk: Path, aiohttp_client, fake_registry: FakeOllamaRegistry
) -> None:
    huge = add_model(fake_registry, "huge", 70 * MB)
    add_model(fake_registry, "small", 1 * MB)
    mirror = await cache_mirror(aiohttp_client, small_disk, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False)
    error = await pull_error(mirror, "huge")
    assert "not enough disk space" in error and "70 MB to store" in error
    manifest = await mirror.get("/v2/library/huge/manifests/latest", headers={"User-Agent": OLLAMA_UA})
    assert manifest.status == 200  # a pull through /v2 starts so, and the manifest is kept
    resp = await mirror.get(f"/v2/library/huge/blobs/{sha(huge)}")
    assert resp.status == 507
    assert "not enough disk space" in (await resp.json())["errors"][0]["message"]
    assert fake_registry.cdn_gets(sha(huge)) == []  # nothing was downloaded
    assert not list((small_disk / "models" / "blobs").glob("*-partial"))
    await api_pull(mirror, "small")  # the catalogue still commits
    assert tags(small_disk) == {key("small"), key("huge")}  # /v2 paths name registry.ollama.ai's models


async def test_a_disk_that_fills_up_mid_fill_ends_it_and_gives_the_room_back(
    small_disk: Path, aiohttp_client, fake_registry: FakeOllamaRegistry
) -> None:
    weights = add_model(fake_registry, "m", 30 * MB)
    fake_registry.cdn_rate = 10 * MB  # 3 s per transfer: time to fill the disk behind its back
    mirror = await cache_mirror(aiohttp_client, small_disk, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False)
    fills = services_of(mirror).fills
    pulling = asyncio.create_task(pull_error(mirror, "m"))
    digest = Digest.parse(sha(weights))

    async def writing() -> bool:
        return (fill := fills.in_flight.get(digest)) is not None and fill.completed > 0

    await wait_for(writing)
    filler = await asyncio.to_thread(fill_up, small_disk)

    error = await pulling
    assert "the disk filled up while storing" in error

    async def all_ended() -> bool:  # the model's other layers end their fills on their own
        return not fills.in_flight.digests()

    await wait_for(all_ended)
    assert not list((small_disk / "models" / "blobs").glob("*-partial"))  # its room was given back
    filler.unlink()
    fake_registry.cdn_rate = 0
    await api_pull(mirror, "m")  # afterwards the same pull works
    assert sha(weights) in blob_files(small_disk)
    assert_consistent(small_disk)


async def test_an_upload_the_disk_cannot_hold_is_507_and_leaves_nothing(
    small_disk: Path, aiohttp_client, fake_registry: FakeOllamaRegistry
) -> None:
    mirror = await cache_mirror(aiohttp_client, small_disk, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False)
    data = os.urandom(70 * MB)
    resp = await mirror.post(f"/api/blobs/{sha(data)}", data=data)
    assert resp.status == 507
    assert "not enough disk space" in (await resp.json())["error"]
    assert list((small_disk / "models" / "blobs").iterdir()) == []  # the temporary file went too
    small = os.urandom(MB)
    assert (await mirror.post(f"/api/blobs/{sha(small)}", data=small)).status == 201


async def test_a_create_that_runs_out_of_disk_ends_with_an_error_line(
    small_disk: Path, tmp_path: Path, aiohttp_client, fake_registry: FakeOllamaRegistry
) -> None:
    """Past the status line, a full disk is the stream's last line, not a cut-off stream."""
    mirror = await cache_mirror(aiohttp_client, small_disk, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, background_prune=False)
    weights = write_gguf(tmp_path / "tiny.gguf").read_bytes()
    assert (await mirror.post(f"/api/blobs/{sha(weights)}", data=weights)).status == 201
    filler = await asyncio.to_thread(fill_up, small_disk)
    async with asyncio.timeout(30):  # a stream cut without its last line once left the client waiting
        resp = await mirror.post("/api/create", json={"model": "tiny", "files": {"tiny.gguf": sha(weights)}})
        lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert resp.status == 200 and lines[0]["status"]  # the stream had begun
    assert lines[-1] == {"error": DISK_FULL_MESSAGE}
    filler.unlink()
    resp = await mirror.post("/api/create", json={"model": "tiny", "files": {"tiny.gguf": sha(weights)}})
    assert json.loads((await resp.text()).splitlines()[-1]) == {"status": "success"}
