"""Reading a blob response's body into buffers the fill lends, without a Python object per packet.

aiohttp hands a body over as one `bytes` object per socket read: allocated, copied out of the
parser, queued and awaited one by one, with a stall timer entered around each. That per-packet
work cost a cold fill as much CPU again as receiving the bytes (measured on loopback: 0.3–0.5
CPU-seconds per GB through `readchunk`, 0.2 read directly, 0.19 for bare `recv_into`). So once
aiohttp has made a blob request — through the egress gate, with its address checks, TLS, proxy,
redirects and token all behind it — and the status and headers are checked, the body of a plain
Content-Length response is read off the connection itself: its transport is switched to
`_DirectBody`, a `BufferedProtocol` that receives straight into the lent buffer (`recv_into`, or
TLS decrypting into it) and wakes the reader once per buffer. That connection is closed
afterwards, never pooled. A chunked body, or one without a length, is read through aiohttp
(`_AiohttpBody`), copied into the same buffers. Both stop at `limit` bytes: the rest of the
range is not this reader's business.

On Linux the direct reader also sets the socket's receive low-water mark (`SO_RCVLOWAT`), so
epoll reports the socket readable only once a worthwhile run of bytes is queued: what the
connection's recent rate brings in LOW_WATER_TIME, up to the buffer. Without it, a connection
limited to tens of MB/s (a WAN, a CDN's per-connection cap) wakes the loop for every few dozen
KB that trickle in: at 50 MB/s per connection that was 16 wakeups per MiB and 2.1–2.6 CPU-seconds
per GB of cold fill, against 2.5 wakeups per MiB on loopback (`bench/mirror`). The mark never
asks for more than the body still has to send (for TLS, less whatever the TLS layer may already
hold), so the tail of a body is never waited for; and when a mark has brought nothing for
LOW_WATER_TIME × 2 (the connection slowed down), it drops to one byte for the rest of that
buffer, so a trickle is read as it comes and a stall is still no byte for `stall` seconds (a
byte queued under the mark is seen at most that much later). Linux's poll also reports a socket
readable below the mark when the receive window is nearly closed, so a mark can never wedge a
connection whose buffer is smaller than it.

`read_into` fills a buffer completely unless the body ends or fails, or bytes have waited in it
for DELIVER_AFTER: then it hands over what it has (`exhausted` tells the two apart). Why: readers
of a filling blob see a byte only once it is written, and on a slow link a whole MiB buffer takes
long — at 35 KB/s per connection over 30 s, the time after which ollama's downloader gives up on
a part that sees no byte. Bytes received before a failure are returned first (they are good),
and the next call raises `BodyError`.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
from typing import Protocol

import aiohttp

LOW_WATER_TIME = 0.05  # seconds of the connection's rate that the low-water mark asks to gather
LOW_WATER_TLS = 256 * 1024  # asyncio's TLS layer reads the socket in pieces this long: a higher mark holds bytes back
TLS_HELD = 1024 * 1024  # body bytes asyncio's TLS layer may hold undelivered: its read + its high water, and more
DELIVER_AFTER = 1.0  # seconds a buffer may hold received bytes before they are handed over unfilled
_SO_RCVLOWAT = getattr(socket, "SO_RCVLOWAT", None) if sys.platform == "linux" else None


class BodyError(Exception):
    """The body stopped: the connection broke, or no byte came for the stall time."""


class Body(Protocol):
    async def read_into(self, view: memoryview) -> int:
        """Fill `view`; fewer bytes at the end of the body, or after DELIVER_AFTER. Raises BodyError."""
        ...

    @property
    def exhausted(self) -> bool:
        """No more bytes will come: the body ended, failed, or reached its limit."""
        ...

    def close(self) -> None:
        """Let go of the connection (closed if the body was read directly)."""
        ...


def open_body(resp: aiohttp.ClientResponse, limit: int, stall: float) -> Body:
    """The fastest reader this response allows for its first `limit` body bytes."""
    connection = resp.connection
    transport = connection.transport if connection is not None else None
    plain = "chunked" not in resp.headers.get("Transfer-Encoding", "").lower()
    if transport is None or transport.is_closing() or not plain or resp.content_length is None:
        return _AiohttpBody(resp, stall)
    try:
        head = resp.content.read_nowait(-1)  # what aiohttp read along with the headers
    except (aiohttp.ClientError, OSError) as exc:  # the connection already failed: the next read says why
        return _Failed(BodyError(describe(exc)))
    return _DirectBody(resp, transport, head, min(resp.content_length, limit), stall)


class _DirectBody(asyncio.BufferedProtocol):
    """The connection's protocol from the end of the headers on: `recv_into` the lent buffer.

    Reading is paused whenever no buffer is lent, so the socket's own buffer (and TCP's window)
    holds what arrives in between. aiohttp's protocol is still told when the connection is lost,
    so its session's bookkeeping closes as usual.
    """

    def __init__(self, resp: aiohttp.ClientResponse, transport: asyncio.Transport, head: bytes, length: int,
                 stall: float) -> None:
        self._resp = resp
        self._transport = transport
        self._previous = transport.get_protocol()
        self._loop = asyncio.get_running_loop()
        self._head = memoryview(head)[:length]
        self._left = length - len(self._head)  # body bytes still to come off the socket
        self._stall = stall
        self._view = memoryview(b"")
        self._filled = 0
        self._last = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False
        self._failure: BodyError | None = None
        self._taken = self._left > 0
        tls = transport.get_extra_info("sslcontext") is not None
        self._socket = transport.get_extra_info("socket") if _SO_RCVLOWAT is not None else None
        self._mark = 1  # the socket's low-water mark (the kernel's default)
        self._mark_cap = LOW_WATER_TLS if tls else math.inf
        self._held = TLS_HELD if tls else 0  # body bytes that may be off the socket but not yet delivered
        self._rate = math.inf  # bytes/s of the last buffer filled; unknown yet
        self._overdue = False  # the buffer has waited DELIVER_AFTER: hand over whatever is in it
        self._deliver: asyncio.TimerHandle | None = None
        if self._taken:
            transport.set_protocol(self)
            if transport.is_reading():
                transport.pause_reading()

    async def read_into(self, view: memoryview) -> int:
        n = min(len(view), len(self._head))
        if n:
            view[:n] = self._head[:n]
            self._head = self._head[n:]
        want = min(len(view) - n, self._left)
        if want == 0 or self._ended:
            return n
        if self._failure is not None:
            if n:
                return n
            raise self._failure
        self._view, self._filled = view[n : n + want], 0
        self._waiter = self._loop.create_future()
        self._last = started = self._loop.time()
        self._set_mark(int(min(want, self._mark_cap, self._rate * LOW_WATER_TIME)))
        self._timer = self._loop.call_at(self._last + self._check_after(), self._check)
        self._overdue = False
        self._deliver = self._loop.call_at(started + DELIVER_AFTER, self._hand_over)
        self._transport.resume_reading()
        try:
            await self._waiter
        finally:
            self._timer.cancel()
            self._deliver.cancel()
            self._waiter = None
            self._view = memoryview(b"")
            if self._transport.is_reading():
                self._transport.pause_reading()
        if self._filled == want:
            elapsed = self._last - started
            self._rate = want / elapsed if elapsed > 0 else math.inf
        self._left -= self._filled
        n += self._filled
        if n == 0 and self._failure is not None:
            raise self._failure
        return n

    @property
    def exhausted(self) -> bool:
        return not self._head and (self._ended or self._failure is not None or self._left == 0)

    def close(self) -> None:
        if self._taken:
            self._resp.close()  # the connection went on with this protocol: never back into the pool

    # ---- asyncio.BufferedProtocol ----------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        self._last = self._loop.time()
        if self._filled >= len(self._view) or self._overdue:
            self._transport.pause_reading()
            self._wake()
        elif self._mark > 1:
            self._set_mark(self._mark)  # lowered if the rest of the body is shorter

    def eof_received(self) -> bool | None:
        self._ended = True
        self._wake()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._failure = BodyError(describe(exc))
        else:
            self._ended = True
        self._wake()
        self._previous.connection_lost(exc)

    def _hand_over(self) -> None:
        """The buffer has waited long enough: hand over what it holds, or the next byte to come."""
        self._overdue = True
        if self._filled:
            self._transport.pause_reading()
            self._wake()
        else:
            self._set_mark(1)

    def _check_after(self) -> float:
        """Seconds after the last byte when `_check` looks: the stall time, sooner while a mark is set."""
        return min(self._stall, 2 * LOW_WATER_TIME) if self._mark > 1 else self._stall

    def _check(self) -> None:
        """Drop a mark that brought nothing in time, else fail the body: no byte for the stall time."""
        now = self._loop.time()
        due = self._last + self._check_after()
        if now < due:
            self._timer = self._loop.call_at(due, self._check)
        elif self._mark > 1:
            self._set_mark(1)  # bytes queued under the mark are reported now: read before a timer due now runs
            self._timer = self._loop.call_at(max(self._last + self._stall, now), self._check)
        else:
            self._failure = BodyError(f"no data for {self._stall:g}s (stalled)")
            self._wake()

    def _set_mark(self, mark: int) -> None:
        """Make epoll report the socket readable once `mark` bytes are queued, never more than the
        body still has to put on the socket."""
        if self._socket is None:
            return
        mark = max(1, min(mark, self._left - self._filled - self._held))
        if mark != self._mark:
            try:
                self._socket.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, mark)
            except OSError:  # the connection is gone (the transport reports why): no marks any more
                self._socket, mark = None, 1
            self._mark = mark

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _AiohttpBody:
    """aiohttp's own reader (chunked bodies, no Content-Length), copied into the lent buffers."""

    def __init__(self, resp: aiohttp.ClientResponse, stall: float) -> None:
        self._resp = resp
        self._stall = stall
        self._rest = memoryview(b"")
        self._ended = False
        self._failure: BodyError | None = None

    @property
    def exhausted(self) -> bool:
        return not self._rest and (self._ended or self._failure is not None)

    async def read_into(self, view: memoryview) -> int:
        n = 0
        due = asyncio.get_running_loop().time() + DELIVER_AFTER
        while n < len(view):
            if not self._rest:
                if self._ended or self._failure is not None:
                    break
                if n and asyncio.get_running_loop().time() >= due:
                    break  # hand over what waited; the next chunk may be long in coming
                await self._next_chunk()
                continue
            k = min(len(view) - n, len(self._rest))
            view[n : n + k] = self._rest[:k]
            self._rest = self._rest[k:]
            n += k
        if n == 0 and self._failure is not None:
            raise self._failure
        return n

    async def _next_chunk(self) -> None:
        try:
            async with asyncio.timeout(self._stall):
                # readchunk hands over aiohttp's buffers one by one; readany would join them (a copy)
                chunk, end_of_http_chunk = await self._resp.content.readchunk()
        except TimeoutError:
            self._failure = BodyError(f"no data for {self._stall:g}s (stalled)")
            return
        except (aiohttp.ClientError, OSError) as exc:
            self._failure = BodyError(describe(exc))
            return
        if chunk:
            self._rest = memoryview(chunk)
        elif not end_of_http_chunk:  # an empty chunk at a chunked-encoding boundary is not the end
            self._ended = True

    def close(self) -> None:
        """Nothing to do: the response's `async with` releases the connection."""


class _Failed:
    def __init__(self, failure: BodyError) -> None:
        self._failure = failure

    exhausted = True

    async def read_into(self, view: memoryview) -> int:
        raise self._failure

    def close(self) -> None:
        """Nothing was taken over."""


def describe(exc: BaseException) -> str:
    """An exception as one log-friendly line: its type, and its text when that says more."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
