"""`FileSender`: a response's file bytes go out with sendfile(2) straight on its connection.

asyncio's `loop.sendfile` does much around each call: it pauses and resumes the transport's
reading (an epoll_ctl each), stats and seeks the file, and waits for writability through the
transport's internals. A blob being filled is sent in runs of a MiB or so as they land, to
every reader at once, so that work recurs per MiB per reader: on this 2-vCPU machine an
ollama-shaped cold pull (3 readers) cost 1.79 CPU-seconds per GB with this sender against 2.01
with `loop.sendfile` (`bench/mirror`, interleaved). uvloop has no `loop.sendfile` at all (aiohttp
then copies the file through Python); this sender works the same on both loops.

How: the transport has sent everything it buffered (the headers), so the socket is ours to
write until the next `write` on the transport. `os.sendfile` runs on a duplicate of the
socket's descriptor (non-blocking, as the socket is), and when the socket is full the loop
watches that duplicate for writability. Why a duplicate: the loops refuse a reader or writer on
a descriptor a transport owns (epoll reports the same socket through either), and it stays
valid while a sender thread uses it even if the loop closes the connection meanwhile.

A range of THREAD_MIN or more is sent from a thread of a small pool of senders, the loop only
waiting for writability in between. Why: the loop is one thread, and on loopback or a fast LAN
sendfile's kernel work (the TCP stack of both ends, on loopback) is most of a warm blob's cost.
With three ollama parts of a stored blob sent from the loop, that work stayed on one core:
0.87–0.94 of nginx on this 2-vCPU machine (`bench/mirror`, warm ollama GET); from the senders
both cores share it: 0.96–1.06, interleaved in the same runs. Shorter ranges (a filling blob is
sent in runs of about a MiB as they land) stay on the loop: there a thread hop per run cost
more CPU than it freed. The thread only sends while the socket takes bytes and never waits on a
slow client, so a few threads serve any number of connections.

A TLS connection (or a transport without a socket) cannot take sendfile: the bytes are read
from the file in a thread and written through the response, which keeps its flow control.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

COPY_CHUNK = 1024 * 1024  # what the TLS path reads and writes at a time
THREAD_MIN = 8 * 1024 * 1024  # ranges at least this long are sent from the senders' threads
THREAD_JOB = 64 * 1024 * 1024  # the most one job sends: a fast client never holds a thread for long

# Threads start on first use; a job ends as soon as the socket is full, so none waits on a client.
_SENDERS = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="sendfile")


class FileSender:
    """Sends ranges of files down one connection; `close` (or `with`) when the response is done."""

    def __init__(self, transport: asyncio.BaseTransport, write: Callable[[bytes], Awaitable[None]]) -> None:
        self._transport = transport
        self._write = write  # the response's own writer: the TLS path
        sock = transport.get_extra_info("socket")
        direct = sock is not None and transport.get_extra_info("sslcontext") is None
        # Sent through and watched on a duplicate: valid until `close`, whatever the transport does
        # meanwhile (a sender thread may still be using it when the loop closes the connection).
        self._out = os.dup(sock.fileno()) if direct else -1
        self._job: Future[int] | None = None  # the last range handed to a sender thread

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the duplicate descriptor; if a sender thread still uses it (the send was cancelled),
        once that thread is done with it."""
        out, self._out = self._out, -1
        if out < 0:
            return
        if self._job is not None and not self._job.done():
            self._job.add_done_callback(lambda _: os.close(out))
        else:
            os.close(out)

    async def send(self, fd: int, offset: int, count: int) -> None:
        """Send `count` bytes of `fd` from `offset`; ConnectionResetError when the client is gone."""
        if self._out < 0:
            await self._copy(fd, offset, count)
            return
        while self._transport.get_write_buffer_size():  # the headers, or bytes a TLS-less write left
            self._check_open()
            await self._writable()
        threaded = count >= THREAD_MIN
        while count > 0:
            self._check_open()
            if threaded:
                want = min(count, THREAD_JOB)
                self._job = _SENDERS.submit(_send_while_taken, self._out, fd, offset, want)
                sent = await asyncio.wrap_future(self._job)
            else:
                want = count
                sent = _send_while_taken(self._out, fd, offset, want)
            offset += sent
            count -= sent
            if sent < want:  # the socket is full
                await self._writable()

    def _check_open(self) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("client disconnected")

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(self._out, _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_writer(self._out)

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


def _send_while_taken(out: int, fd: int, offset: int, count: int) -> int:
    """sendfile until `count` bytes went or the socket is full; returns how many went (0: it was
    full). ConnectionResetError when the client is gone; OSError when the file ends early."""
    total = 0
    while total < count:
        try:
            sent = os.sendfile(out, fd, offset + total, count - total)
        except BlockingIOError:
            break
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionResetError(f"client disconnected: {exc}") from None
        if sent == 0:
            raise OSError(f"the file ended {count - total} bytes short of the range being sent")
        total += sent
    return total
