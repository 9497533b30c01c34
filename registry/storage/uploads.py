"""Resumable blob upload sessions for push, kept as files under `<scratch>/uploads/<id>/`.

A session is a data file plus a small `meta.json` (the repository it belongs to), so a session
survives a server restart and a client can continue where it stopped. Each chunk is written at
the offset its `Content-Range` names; a chunk that starts before the end (a retried part) first
truncates to that offset, and a chunk cut off by a broken connection is rolled back, so a client
retrying the same part (ollama does, up to 6 times) always succeeds. The sha256 is updated while
writing; only after a rollback or a restart is the data re-hashed at commit. Sessions idle longer
than CORRAL_UPLOAD_TIMEOUT are removed by `expire`, which the server runs periodically.
Writers of one session take `hold`; in a cluster, `storage.cluster_uploads` makes that a lock of
the whole cluster and keeps each session's size in the catalogue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from registry.model.names import Digest
from registry.storage.store import WRITE_BUFFER, BlobTooLargeError, fsync_path, hash_file

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
DATA = "data"
META = "meta.json"


class UploadRangeError(ValueError):
    """A chunk that does not start at or before the current end of the upload (a gap)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"chunk must start at or before offset {size}")
        self.size = size


class UploadGone(LookupError):
    """The session was finished or cancelled (on another node) while this request waited for it."""


class IncompleteChunkError(ValueError):
    """The body ended before the announced length: the chunk was rolled back."""


@dataclass
class Upload:
    id: str
    directory: Path
    repository: str
    size: int
    hasher: Any = None  # sha256 of data[:size] while it is known without re-reading the file
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def data_path(self) -> Path:
        return self.directory / DATA


class UploadStore:
    def __init__(self, root: Path, max_size: int, timeout: float) -> None:
        self.root = root
        self.max_size = max_size
        self.timeout = timeout
        self._open: dict[str, Upload] = {}

    async def create(self, repository: str) -> Upload:
        upload_id = secrets.token_hex(16)
        directory = self.root / upload_id
        await asyncio.to_thread(_create_files, directory, {"repository": repository, "created": time.time()})
        upload = Upload(upload_id, directory, repository, 0, hashlib.sha256())
        self._open[upload_id] = upload
        return upload

    async def get(self, upload_id: str, repository: str) -> Upload | None:
        """The session, loading it from disk after a restart; None if unknown or another repo's."""
        if not UPLOAD_ID.match(upload_id):
            return None
        upload = self._open.get(upload_id)
        if upload is None:
            directory = self.root / upload_id
            try:
                meta, size = await asyncio.to_thread(_read_files, directory)
            except (OSError, ValueError):
                return None
            upload = self._open.setdefault(upload_id, Upload(upload_id, directory, meta["repository"], size))
        return upload if upload.repository == repository else None

    @contextlib.asynccontextmanager
    async def hold(self, upload: Upload) -> AsyncIterator[None]:
        """Be the one writer of `upload` (append, commit, discard happen under it)."""
        async with upload.lock:
            yield

    async def append(self, upload: Upload, start: int | None, chunks: AsyncIterable[bytes],
                     length: int | None) -> None:
        """Write a chunk at `start` (default: the end). Call under `hold`."""
        start = upload.size if start is None else start
        if start > upload.size:
            raise UploadRangeError(upload.size)
        if length is not None and start + length > self.max_size:
            raise BlobTooLargeError(self.max_size)
        hasher = upload.hasher.copy() if upload.hasher is not None and start == upload.size else None
        f = await asyncio.to_thread(_open_at, upload.data_path, start)
        written = 0
        try:
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                if start + written + len(buffer) > self.max_size:
                    raise BlobTooLargeError(self.max_size)
                if len(buffer) >= WRITE_BUFFER:
                    written += await asyncio.to_thread(_write, f, bytes(buffer), hasher)
                    buffer = bytearray()
            if buffer:
                written += await asyncio.to_thread(_write, f, bytes(buffer), hasher)
            if length is not None and written != length:
                raise IncompleteChunkError(f"chunk ended after {written} of {length} bytes")
        except BaseException:
            await asyncio.to_thread(_truncate_close, f, start)
            if start < upload.size:
                upload.size, upload.hasher = start, None
            raise
        await asyncio.to_thread(f.close)
        upload.size, upload.hasher = start + written, hasher

    async def digest(self, upload: Upload) -> Digest:
        """sha256 of everything uploaded so far (re-hashing the file only when it must)."""
        if upload.hasher is not None:
            return Digest(upload.hasher.hexdigest())
        digest, _ = await hash_file(upload.data_path)
        return digest

    async def sync(self, upload: Upload) -> None:
        await asyncio.to_thread(fsync_path, upload.data_path)

    async def discard(self, upload: Upload) -> None:
        self._open.pop(upload.id, None)
        await asyncio.to_thread(shutil.rmtree, upload.directory, True)

    async def expire(self) -> list[str]:
        """Remove sessions idle longer than the timeout (not those being written right now)."""
        busy = {i for i, u in self._open.items() if u.lock.locked()}
        removed = await asyncio.to_thread(_expire, self.root, time.time() - self.timeout, busy)
        for upload_id in removed:
            self._open.pop(upload_id, None)
        return removed


def _create_files(directory: Path, meta: dict[str, Any]) -> None:
    directory.mkdir(parents=True)
    (directory / DATA).touch()
    (directory / META).write_text(json.dumps(meta))


def _read_files(directory: Path) -> tuple[dict[str, Any], int]:
    meta = json.loads((directory / META).read_text())
    if not isinstance(meta, dict) or not isinstance(meta.get("repository"), str):
        raise ValueError("invalid upload metadata")
    return meta, (directory / DATA).stat().st_size


def _open_at(path: Path, offset: int) -> BinaryIO:
    f = open(path, "r+b")  # noqa: SIM115 - closed by append
    f.truncate(offset)
    f.seek(offset)
    return f


def _write(f: BinaryIO, data: bytes, hasher: Any) -> int:
    f.write(data)
    if hasher is not None:
        hasher.update(data)
    return len(data)


def _truncate_close(f: BinaryIO, offset: int) -> None:
    with contextlib.suppress(OSError):
        f.truncate(offset)
    f.close()


def _expire(root: Path, cutoff: float, busy: set[str]) -> list[str]:
    removed = []
    if not root.is_dir():
        return removed
    for directory in root.iterdir():
        if directory.name in busy or not UPLOAD_ID.match(directory.name):
            continue
        try:
            idle_since = max(directory.stat().st_mtime, (directory / DATA).stat().st_mtime)
        except FileNotFoundError:
            idle_since = 0.0
        if idle_since < cutoff:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory.name)
    return removed
