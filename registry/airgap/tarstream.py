"""Just enough of the tar format to stream bundles through asyncio without a thread per tar.

Writing: a ustar header per regular file (names are short ASCII, built by corral), the data, zero
padding to 512 bytes, two zero blocks at the end; so the total size is known in advance.
Reading: one header at a time from an async byte source, checksum verified by tarfile's own
parser, and only regular files accepted — links, devices, long-name and pax extensions are
refused, since a bundle never contains them and each is a way to smuggle something in.
"""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

BLOCK = 512
END = b"\0" * (2 * BLOCK)
READ_CHUNK = 1024 * 1024


class TarFormatError(ValueError):
    """The byte stream is not a tar this reader accepts, or it ended early."""


def padding(size: int) -> int:
    return -size % BLOCK


def header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, int(mtime), 0o644, tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="ascii", errors="strict")


def entry_size(size: int) -> int:
    """Bytes one file takes in the archive: header, data, padding."""
    return BLOCK + size + padding(size)


@dataclass(frozen=True)
class Entry:
    name: str
    size: int


class TarReader:
    """Sequential reader over `read_exactly(n)`, which must raise EOFError on a short read."""

    def __init__(self, read_exactly: Callable[[int], Awaitable[bytes]]) -> None:
        self._read = read_exactly
        self._last = "(start of archive)"
        self._begun = False  # a first header was read: before it, a failure means this is no tar at all

    async def next(self) -> Entry | None:
        """The next entry's header, or None after the complete end-of-archive marker.

        Both zero blocks are read: an archive cut inside its marker is as truncated as one cut
        inside a file, and the promise is that a truncated bundle imports nothing.
        """
        try:
            block = await self._read(BLOCK)
        except EOFError:
            if not self._begun:
                raise TarFormatError("not a tar archive: shorter than one tar header") from None
            raise TarFormatError(f"archive is truncated after {self._last}") from None
        if block == END[:BLOCK]:
            try:
                second = await self._read(BLOCK)
            except EOFError:
                raise TarFormatError("archive is truncated in its end-of-archive marker") from None
            if second != END[:BLOCK]:
                raise TarFormatError(f"invalid end-of-archive marker after {self._last}")
            return None
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError) as exc:
            if not self._begun:
                raise TarFormatError(f"not a tar archive: its first block is no tar header ({exc})") from None
            raise TarFormatError(f"invalid tar header after {self._last}: {exc}") from None
        self._begun = True
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise TarFormatError(f"entry {info.name}: only regular files are allowed in a bundle")
        self._last = info.name
        return Entry(info.name, info.size)

    async def chunks(self, entry: Entry) -> AsyncIterator[bytes]:
        """The entry's data (must be consumed fully before `next`), then its padding is skipped."""
        remaining = entry.size
        try:
            while remaining:
                chunk = await self._read(min(READ_CHUNK, remaining))
                remaining -= len(chunk)
                yield chunk
            if padding(entry.size):
                await self._read(padding(entry.size))
        except EOFError:
            raise TarFormatError(f"entry {entry.name} is truncated") from None

    async def read_all(self, entry: Entry, limit: int) -> bytes:
        if entry.size > limit:
            raise TarFormatError(f"entry {entry.name} is larger than {limit} bytes")
        return b"".join([chunk async for chunk in self.chunks(entry)])


def stream_reader_source(content: asyncio.StreamReader) -> Callable[[int], Awaitable[bytes]]:
    """Adapt an aiohttp/asyncio stream to `read_exactly`, turning a short body into EOFError."""

    async def read_exactly(n: int) -> bytes:
        try:
            return await content.readexactly(n)
        except asyncio.IncompleteReadError:
            raise EOFError from None

    return read_exactly
