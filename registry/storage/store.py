"""BlobStore: content-addressed files under `<models>/blobs/sha256-<hex>`.

A blob becomes visible only by an atomic rename of a fully written, fsynced and verified
temporary file in the same directory, so a reader can never see a torn or unverified file: an
interrupted upload, a wrong digest or a short body leaves nothing behind. Hashing and disk writes
run in worker threads (hashlib releases the GIL on large buffers), keeping the event loop free.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path

from registry.model.names import Digest

WRITE_BUFFER = 4 * 1024 * 1024  # bytes gathered before one thread hop: amortises the hop cost
TEMP_MARKER = "-ingest-"
PARTIAL_SUFFIX = "-partial"
QUARANTINE_DIR = "quarantine"


class BlobError(ValueError):
    """Base for ingest failures the client caused (wrong digest, wrong size, too large)."""


class DigestMismatchError(BlobError):
    def __init__(self, expected: Digest, actual: Digest) -> None:
        super().__init__(f"digest mismatch, expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class SizeMismatchError(BlobError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"size mismatch, expected {expected} bytes, got {actual}")
        self.expected = expected
        self.actual = actual


class BlobTooLargeError(BlobError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"blob exceeds the upload limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class IngestResult:
    digest: Digest
    size: int
    created: bool  # False when an identical blob was already present


class _Sink:
    """A temporary file being written and hashed; all methods are blocking (run in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)

    def close(self, sync: bool) -> None:
        try:
            if sync:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)


class BlobStore:
    """Owns the blobs directory. Paths are only ever derived from validated `Digest` objects."""

    def __init__(self, blobs_dir: Path) -> None:
        self.root = blobs_dir
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.root / digest.filename

    def partial_path(self, digest: Digest) -> Path:
        """Where an upstream fill of `digest` accumulates (ollama's `-partial` naming)."""
        return self.root / f"{digest.filename}{PARTIAL_SUFFIX}"

    def exists(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def free_space(self) -> int:
        """Bytes still free on the blobs directory's filesystem (statvfs: call off the event loop)."""
        return shutil.disk_usage(self.root).free

    def size(self, digest: Digest) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    async def ingest(
        self,
        chunks: AsyncIterable[bytes],
        *,
        expected: Digest | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
    ) -> IngestResult:
        """Stream `chunks` into the store; verify against `expected`/`expected_size` if given.

        Concurrent ingests of one digest each write their own temporary file; the rename is
        atomic and the content identical, so the last one to finish simply wins.
        """
        temp = self.root / f"{expected.filename if expected else 'sha256'}{TEMP_MARKER}{secrets.token_hex(8)}"
        sink = await asyncio.to_thread(_Sink, temp)
        closed = False
        try:
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                if max_size is not None and sink.size + len(buffer) > max_size:
                    raise BlobTooLargeError(max_size)
                if len(buffer) >= WRITE_BUFFER:
                    data, buffer = bytes(buffer), bytearray()
                    await asyncio.to_thread(sink.write, data)
            if buffer:
                await asyncio.to_thread(sink.write, bytes(buffer))
            actual = Digest(sink.hash.hexdigest())
            if expected is not None and actual != expected:
                raise DigestMismatchError(expected, actual)
            if expected_size is not None and sink.size != expected_size:
                raise SizeMismatchError(expected_size, sink.size)
            await asyncio.to_thread(sink.close, True)
            closed = True
            created = await asyncio.to_thread(self._publish, temp, actual)
            return IngestResult(actual, sink.size, created)
        finally:
            if not closed:
                await asyncio.to_thread(sink.close, False)
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    async def ingest_file(self, source: Path, *, expected: Digest | None = None) -> IngestResult:
        """Copy a local file in, hashing as it goes (used by create from a path and imports)."""
        return await self.ingest(read_file_chunks(source), expected=expected)

    async def link_or_copy(self, source: Path, digest: Digest) -> IngestResult:
        """Adopt a file already known to hash to `digest`: hard link when on this filesystem.

        The caller must have verified the digest; a hard link shares the inode, so no bytes move.
        """
        target = self.path(digest)
        if target.exists():
            return IngestResult(digest, target.stat().st_size, False)
        temp = self.root / f"{digest.filename}{TEMP_MARKER}{secrets.token_hex(8)}"
        try:
            await asyncio.to_thread(os.link, source, temp)
        except OSError:
            return await self.ingest_file(source, expected=digest)
        try:
            created = await asyncio.to_thread(self._publish, temp, digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return IngestResult(digest, target.stat().st_size, created)

    def _publish(self, temp: Path, digest: Digest) -> bool:
        target = self.path(digest)
        created = not target.exists()
        os.replace(temp, target)
        fsync_path(self.root)
        return created

    def delete(self, digest: Digest) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def quarantine(self, digest: Digest) -> Path | None:
        """Move a blob that failed verification aside: never served again, kept for inspection."""
        qdir = self.root.parent / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        target = qdir / f"{digest.filename}-{secrets.token_hex(4)}"
        try:
            os.replace(self.path(digest), target)
        except FileNotFoundError:
            return None
        return target

    def stray_temp_files(self, untouched_since: float | None = None) -> list[Path]:
        """Leftovers of ingests interrupted by a crash; safe to delete at startup. With
        `untouched_since` (a cluster, whose other nodes ingest into the same folder meanwhile),
        only the files nobody has written to since then."""
        strays = []
        for path in self.root.iterdir():
            if TEMP_MARKER not in path.name:
                continue
            if untouched_since is not None:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if max(st.st_mtime, st.st_ctime) >= untouched_since:
                    continue
            strays.append(path)
        return strays

    def stored_digests(self) -> list[Digest]:
        out = []
        for p in self.root.iterdir():
            if Digest.is_valid(p.name) and p.is_file():
                out.append(Digest.parse(p.name))
        return out


async def hash_file(path: Path) -> tuple[Digest, int]:
    """sha256 and size of a file, computed in a worker thread."""
    return await asyncio.to_thread(_hash_file_sync, path)


def _hash_file_sync(path: Path) -> tuple[Digest, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(WRITE_BUFFER):
            h.update(chunk)
            size += len(chunk)
    return Digest(h.hexdigest()), size


async def read_file_chunks(path: Path, chunk_size: int = WRITE_BUFFER) -> AsyncIterable[bytes]:
    """A file as an async stream, read in a worker thread: an upload body aiohttp sends to the end."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, chunk_size):
            yield chunk
    finally:
        f.close()


def fsync_path(path: Path) -> None:
    """fsync a file or directory by path (a directory after a rename makes the rename durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
