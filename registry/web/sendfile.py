"""`FileSender`: a response's file bytes go out with sendfile(2) straight on its connection.

asyncio's `loop.sendfile` does much around each call: it pauses and resumes the transport's
reading (an epoll_ctl each), stats and seeks the file, and waits for writability through the
transport's internals. A blob being filled is sent in runs of a MiB or so as they land, to
every reader at once, so that work recurs per MiB per reader: on this 2-vCPU machine an
ollama-shaped cold pull (3 readers) cost 1.79 CPU-seconds per GB with this sender against 2.01
with `loop.sendfile` (`bench/mirror`, interleaved). uvloop has no `loop.sendfile` at all (aiohttp
then copies the file through Python); this sender works the same on both loops.

How: the transport has sent everything it buffered (the headers), so the socket is ours to
write until the next `write` on the transport; `os.sendfile` runs on its (non-blocking) socket,
and when the socket is full the loop watches a duplicate of its descriptor for writability.
Why a duplicate: the loops refuse a reader or writer on a descriptor a transport owns, and
epoll reports the same socket through either descriptor.

A TLS connection (or a transport without a socket) cannot take sendfile: the bytes are read
from the file in a thread and written through the response, which keeps its flow control.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Self

COPY_CHUNK = 1024 * 1024  # what the TLS path reads and writes at a time


class FileSender:
    """Sends ranges of files down one connection; `close` (or `with`) when the response is done."""

    def __init__(self, transport: asyncio.BaseTransport, write: Callable[[bytes], Awaitable[None]]) -> None:
        self._transport = transport
        self._write = write  # the response's own writer: the TLS path
        sock = transport.get_extra_info("socket")
        direct = sock is not None and transport.get_extra_info("sslcontext") is None
        self._out = sock.fileno() if direct else -1
        self._watch = os.dup(self._out) if direct else -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._watch >= 0:
            os.close(self._watch)
            self._watch = -1

    async def send(self, fd: int, offset: int, count: int) -> None:
        """Send `count` bytes of `fd` from `offset`; ConnectionResetError when the client is gone."""
        if self._watch < 0:
            await self._copy(fd, offset, count)
            return
        while self._transport.get_write_buffer_size():  # the headers, or bytes a TLS-less write left
            self._check_open()
            await self._writable()
        while count > 0:
            self._check_open()
            try:
                sent = os.sendfile(self._out, fd, offset, count)
            except BlockingIOError:
                await self._writable()
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ConnectionResetError(f"client disconnected: {exc}") from None
            if sent == 0:
                raise OSError(f"the file ended {count} bytes short of the range being sent")
            offset += sent
            count -= sent

    def _check_open(self) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("client disconnected")

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(self._watch, _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_writer(self._watch)

    async def _copy(self, fd: int, offset: int, count: int) -> None:
        while count > 0:
            chunk = await asyncio.to_thread(os.pread, fd, min(COPY_CHUNK, count), offset)
            if not chunk:
                raise OSError(f"the file ended {count} bytes short of the range being sent")
            await self._write(chunk)
            offset += len(chunk)
            count -= len(chunk)


def _resolve(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
