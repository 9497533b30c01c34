"""BlobStore ingest: verified, atomic, and clean after every kind of failure."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.model.names import Digest
from registry.storage.store import BlobStore, BlobTooLargeError, DigestMismatchError, SizeMismatchError


def digest_of(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


async def chunks(data: bytes, size: int = 65536, delay: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if delay:
            await asyncio.sleep(delay)
        yield data[i : i + size]


def leftovers(store: BlobStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir())


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


async def test_ingest_verifies_and_publishes(store: BlobStore) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)
    result = await store.ingest(chunks(data), expected=digest_of(data), expected_size=len(data))
    assert result.created and result.size == len(data)
    assert store.path(result.digest).read_bytes() == data
    assert leftovers(store) == [result.digest.filename]


async def test_concurrent_ingests_of_the_same_digest(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024)
    d = digest_of(data)
    results = await asyncio.gather(*(store.ingest(chunks(data, 100_000, 0.001), expected=d) for _ in range(8)))
    assert all(r.digest == d for r in results)
    assert store.path(d).read_bytes() == data
    assert leftovers(store) == [d.filename]


async def test_wrong_digest_leaves_nothing(store: BlobStore) -> None:
    data = os.urandom(100_000)
    wrong = digest_of(b"something else")
    with pytest.raises(DigestMismatchError):
        await store.ingest(chunks(data), expected=wrong)
    assert leftovers(store) == []


async def test_short_body_leaves_nothing(store: BlobStore) -> None:
    data = os.urandom(100_000)
    with pytest.raises(DigestMismatchError):
        await store.ingest(chunks(data[:-10]), expected=digest_of(data))
    with pytest.raises(SizeMismatchError):
        await store.ingest(chunks(data[:-10]), expected_size=len(data))
    assert leftovers(store) == []


async def test_too_large_leaves_nothing(store: BlobStore) -> None:
    with pytest.raises(BlobTooLargeError):
        await store.ingest(chunks(b"x" * 10_000), max_size=5_000)
    assert leftovers(store) == []


async def test_disconnect_mid_upload_leaves_nothing(store: BlobStore) -> None:
    data = os.urandom(1_000_000)

    async def broken() -> AsyncIterator[bytes]:
        yield data[:300_000]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.ingest(broken(), expected=digest_of(data))
    assert leftovers(store) == []


async def test_cancelled_ingest_leaves_nothing(store: BlobStore) -> None:
    data = os.urandom(2_000_000)
    task = asyncio.create_task(store.ingest(chunks(data, 50_000, 0.01), expected=digest_of(data)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(store) == []


async def test_link_or_copy_adopts_a_verified_file(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"weights" * 1000)
    d = digest_of(source.read_bytes())
    result = await store.link_or_copy(source, d)
    assert result.created
    assert os.stat(store.path(d)).st_ino == os.stat(source).st_ino  # same filesystem: a hard link


def test_paths_come_only_from_digests(store: BlobStore) -> None:
    d = Digest.parse("sha256:" + "a" * 64)
    assert store.path(d).parent == store.root
    assert store.path(d).name == "sha256-" + "a" * 64
