"""Reading a blob body into lent buffers: off the connection itself (plain and TLS), or through
aiohttp for a chunked body; with the range limit, broken connections and stalls."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from registry.auth.certs import create_certificates
from registry.mirror import body
from registry.mirror.body import BodyError, open_body
from tests.support.server import free_port

BLOB = random.Random(7).randbytes(3_000_000)  # several socket reads, several TLS records
BUFFER = 64 * 1024
TRICKLE = 20_000  # bytes of a trickling body


@dataclass
class BlobServer:
    """A loopback server of BLOB at /blob; `fault` changes how the next answers end."""

    url: str
    fault: str | None = None  # "cut": close after a third; "stall": stop after a third; "chunked"; "trickle"
    connections: set[int] = field(default_factory=set)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # ends a stall


async def _serve(request: web.Request, state: BlobServer) -> web.StreamResponse:
    state.connections.add(id(request.transport))
    response = web.StreamResponse()
    if state.fault != "chunked":
        response.content_length = len(BLOB)
    await response.prepare(request)
    third = len(BLOB) // 3
    if state.fault == "trickle":  # a slow upstream: small pieces, never a stall
        for start in range(0, TRICKLE, 500):
            await response.write(BLOB[start : start + 500])
            await asyncio.sleep(0.02)
        return response
    if state.fault in ("cut", "stall"):
        await response.write(BLOB[:third])
        if state.fault == "stall":
            await state.released.wait()
        assert request.transport is not None
        request.transport.close()
        return response
    for start in range(0, len(BLOB), 100_000):
        await response.write(BLOB[start : start + 100_000])
    await response.write_eof()
    return response


Served = tuple[BlobServer, ssl.SSLContext | None]  # the server, and the context a client trusts it with


@pytest.fixture(params=["http", "https"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    port = free_port()
    server_ctx = client_ctx = None
    if request.param == "https":
        files = create_certificates(tmp_path / "certs", ["127.0.0.1"])
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(files.cert, files.key)
        client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    state = BlobServer(f"{request.param}://127.0.0.1:{port}/blob")

    async def blob(request: web.Request) -> web.StreamResponse:
        return await _serve(request, state)

    app = web.Application()
    app.router.add_get("/blob", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
    yield state, client_ctx
    state.released.set()
    await runner.cleanup()


async def read_all(session: aiohttp.ClientSession, url: str, limit: int, stall: float = 5.0,
                   size: int = BUFFER) -> tuple[bytes, str | None]:
    """Read up to `limit` body bytes in pieces of `size` until a read brings none: the bytes, and
    the error that stopped them (bytes that came before an error are handed over first)."""
    out = bytearray()
    buffer = bytearray(size)
    async with session.get(url) as resp:
        reader = open_body(resp, limit, stall)
        try:
            while len(out) < limit:
                want = min(size, limit - len(out))
                n = await reader.read_into(memoryview(buffer)[:want])
                out += buffer[:n]
                if n == 0:  # the body ended
                    break
        except BodyError as exc:
            return bytes(out), str(exc)
        finally:
            reader.close()
    return bytes(out), None


def session(ctx: ssl.SSLContext | None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx if ctx is not None else True))


async def test_the_whole_body_arrives(server: Served) -> None:
    state, ctx = server
    async with session(ctx) as client:
        assert await read_all(client, state.url, len(BLOB)) == (BLOB, None)
        assert await read_all(client, state.url, len(BLOB)) == (BLOB, None)  # the session goes on
    assert len(state.connections) == 2  # a connection read directly is never pooled


async def test_a_slow_body_is_not_a_stalled_one(server: Served) -> None:
    """Pieces far below the low-water mark, each well within the stall time: all of it arrives."""
    state, ctx = server
    state.fault = "trickle"
    async with session(ctx) as client:
        assert await read_all(client, state.url, TRICKLE, stall=0.5) == (BLOB[:TRICKLE], None)


async def test_bytes_of_a_slow_body_are_handed_over_before_the_buffer_is_full(
        server: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a slow link a buffer would take long to fill, and readers of the filling blob would see
    nothing meanwhile: after DELIVER_AFTER what it holds is handed over, and the body goes on."""
    state, ctx = server
    state.fault = "trickle"  # 20 kB in 0.8 s
    monkeypatch.setattr(body, "DELIVER_AFTER", 0.2)
    buffer = bytearray(BUFFER)
    async with session(ctx) as client, client.get(state.url) as resp:
        reader = open_body(resp, TRICKLE, stall=5)
        try:
            first = await reader.read_into(memoryview(buffer))
            assert 0 < first < TRICKLE and not reader.exhausted  # handed over early, not the end
            got = bytes(buffer[:first])
            while len(got) < TRICKLE:
                n = await reader.read_into(memoryview(buffer)[: TRICKLE - len(got)])
                assert n > 0
                got += buffer[:n]
            assert got == BLOB[:TRICKLE] and reader.exhausted
        finally:
            reader.close()


async def test_the_tail_of_a_body_under_the_mark_arrives_without_waiting(
        server: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """The low-water mark never asks for bytes the body will not send: with the check that drops a
    mark put off past the stall time, every read (the last, shorter one too, and with TLS holding
    bytes back) still ends as soon as its bytes are in; the server keeps the connection open."""
    state, ctx = server
    monkeypatch.setattr(body, "LOW_WATER_TIME", 1000.0)
    async with session(ctx) as client, asyncio.timeout(20):  # a mark waited for ends in the 30 s stall
        assert await read_all(client, state.url, len(BLOB), stall=30, size=1024 * 1024) == (BLOB, None)


@pytest.mark.skipif(sys.platform != "linux", reason="the low-water mark is set on Linux only")
async def test_a_fast_body_is_reported_a_buffer_at_a_time() -> None:
    """Over plain HTTP the mark asks for what the buffer still lacks (past what aiohttp read with
    the headers), so the loop wakes once per buffer, not per packet."""
    marks: list[int] = []

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=BLOB)

    app = web.Application()
    app.router.add_get("/blob", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}/blob") as resp:
            reader = open_body(resp, len(BLOB), 5.0)
            sock = resp.connection.transport.get_extra_info("socket")  # type: ignore[union-attr]
            buffer = bytearray(1024 * 1024)  # more than aiohttp reads along with the headers
            assert await reader.read_into(memoryview(buffer)) == len(buffer)
            marks.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))
            reader.close()
    finally:
        await runner.cleanup()
    assert marks[0] > 256 * 1024


async def test_reading_stops_at_the_limit(server: Served) -> None:
    state, ctx = server
    async with session(ctx) as client:
        assert await read_all(client, state.url, 1_234_567) == (BLOB[:1_234_567], None)


async def test_a_chunked_body_is_read_through_aiohttp(server: Served) -> None:
    state, ctx = server
    state.fault = "chunked"
    async with session(ctx) as client:
        assert await read_all(client, state.url, len(BLOB)) == (BLOB, None)


async def test_a_cut_connection_keeps_what_arrived(server: Served) -> None:
    state, ctx = server
    state.fault = "cut"
    async with session(ctx) as client:
        assert await read_all(client, state.url, len(BLOB)) == (BLOB[: len(BLOB) // 3], None)  # a short body


async def test_a_stalled_body_fails_after_the_stall_time(server: Served) -> None:
    state, ctx = server
    state.fault = "stall"
    async with session(ctx) as client:
        started = asyncio.get_running_loop().time()
        data, error = await read_all(client, state.url, len(BLOB), stall=0.3)
        waited = asyncio.get_running_loop().time() - started
    assert data == BLOB[: len(BLOB) // 3]
    assert error == "no data for 0.3s (stalled)"
    assert 0.3 <= waited < 3
