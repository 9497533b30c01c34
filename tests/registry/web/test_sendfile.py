"""`FileSender` on both loops the server runs on, for ranges sent from the loop and from the
sender threads: a range goes out whole even when the client is slower than the sender, a client
that goes away ends the send, a cancelled send closes its descriptor once its thread is done,
and nothing is left open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from registry.web import sendfile
from registry.web.sendfile import THREAD_MIN, FileSender

LOOPS = [pytest.param(None, id="asyncio"), pytest.param(uvloop.new_event_loop, id="uvloop")]
SIZE = THREAD_MIN + 4 * 1024 * 1024  # holds a range sent from a thread and ranges sent from the loop


def serve(loop_factory, path: Path, ranges: list[tuple[int, int]],
          client: Callable[[int], bytes]) -> tuple[bytes, BaseException | None, int, int]:
    """Serve `ranges` of `path` in one response to `client(port)`, run in a thread; returns what the
    client read, what the sender raised, and the process's open descriptors before and after."""
    outcome: list[BaseException | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = sum(count for _, count in ranges)
        await response.prepare(request)
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        try:
            with FileSender(request.transport, response.write) as sender:
                for offset, count in ranges:
                    await sender.send(fd, offset, count)
        except (ConnectionResetError, OSError) as exc:
            outcome.append(exc)
            return response
        finally:
            os.close(fd)
        outcome.append(None)
        await response.write_eof()
        return response

    async def main() -> tuple[bytes, int, int]:
        app = web.Application()
        app.router.add_get("/blob", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        before = len(os.listdir("/proc/self/fd"))
        try:
            body = await asyncio.to_thread(client, port)
            for _ in range(200):  # the handler ends just after the client
                if outcome:
                    break
                await asyncio.sleep(0.05)
        finally:
            await runner.cleanup()  # closes the connection: what is open after it was leaked
        return body, before, len(os.listdir("/proc/self/fd")) + 1  # + the listening socket, closed too

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        body, before, after = runner.run(main())
    assert outcome, "the handler never finished"
    return body, outcome[0], before, after


def slow_reader(port: int) -> bytes:
    """A client with a small receive buffer that waits before reading: the sender meets a full socket."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(20)  # a leaked duplicate of the server's socket would keep it open: no end
        time.sleep(0.3)
        data = bytearray()
        while chunk := sock.recv(64 * 1024):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return body


def leaving_reader(port: int) -> bytes:
    """A client that reads the headers and some of the body (so the sending has begun), then
    resets the connection."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(20)
        got = b""
        while len(got.partition(b"\r\n\r\n")[2]) < 64 * 1024:
            got += sock.recv(64 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return got


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_ranges_go_out_whole_through_a_full_socket(loop_factory, blob: Path) -> None:
    ranges = [(12345, 2 * 1024 * 1024), (3 * 1024 * 1024, THREAD_MIN), (SIZE - 5, 5), (0, 1)]
    body, error, before, after = serve(loop_factory, blob, ranges, slow_reader)
    data = blob.read_bytes()
    assert error is None
    assert body == b"".join(data[offset:offset + count] for offset, count in ranges)
    assert after <= before  # the duplicate descriptor watched for writability is closed


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_client_that_goes_away_ends_the_send(loop_factory, blob: Path) -> None:
    _, error, before, after = serve(loop_factory, blob, [(0, SIZE)], leaving_reader)
    assert isinstance(error, ConnectionResetError)
    assert after <= before


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_file_shorter_than_its_range_is_an_error_not_a_hang(loop_factory, blob: Path) -> None:
    body, error, _, _ = serve(loop_factory, blob, [(SIZE - 100, 200)], slow_reader_of_short_body)
    assert isinstance(error, OSError) and "short" in str(error)
    assert len(body) == 100


def slow_reader_of_short_body(port: int) -> bytes:
    """Reads until the server cuts the response it could not finish."""
    with socket.socket() as sock:
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(10)
        data = bytearray()
        while chunk := sock.recv(64 * 1024):
            data += chunk
    return bytes(data).partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_cancelled_send_closes_its_descriptor_once_its_thread_is_done(
        loop_factory, blob: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server shutting down cancels a send while a sender thread carries it out: the duplicate
    descriptor that thread writes to must stay open until it is done, and be closed then."""
    started, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def slow_send(out: int, fd: int, offset: int, count: int) -> int:
        started.set()
        release.wait(10)
        seen.append(_is_open(out))  # what a real sendfile here would write to
        return 0

    monkeypatch.setattr(sendfile, "_send_while_taken", slow_send)

    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        fd = os.open(blob, os.O_RDONLY)
        try:
            before = _open_count()
            sender = FileSender(transport, _never_written)
            sending = asyncio.create_task(sender.send(fd, 0, SIZE))
            assert await asyncio.to_thread(started.wait, 10)
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            sender.close()
            during = _open_count()
            release.set()
            await asyncio.wrap_future(sender._job)
            for _ in range(100):  # the job's done callbacks run just after its result is set
                if _open_count() == before:
                    break
                await asyncio.sleep(0.01)
            return before, during, _open_count()
        finally:
            transport.close()
            theirs.close()
            os.close(fd)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        before, during, after = runner.run(main())
    assert during == before + 1  # closed by the loop while the thread still used it: not yet
    assert seen == [True]
    assert after == before


def _open_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def _never_written(data: bytes) -> None:
    raise AssertionError("a plain socket is sent to with sendfile, never through the response")
