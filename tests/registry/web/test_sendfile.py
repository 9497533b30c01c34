"""`FileSender` on both loops the server runs on: a range goes out whole even when the client is
slower than the sender, a client that goes away ends the send, and nothing is left open."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from registry.web.sendfile import FileSender

LOOPS = [pytest.param(None, id="asyncio"), pytest.param(uvloop.new_event_loop, id="uvloop")]
SIZE = 6 * 1024 * 1024


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
    ranges = [(12345, 2 * 1024 * 1024), (5 * 1024 * 1024, SIZE - 5 * 1024 * 1024), (0, 1)]
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

