"""A TCP listener on loopback that counts the connections it accepts, and nothing else.

It speaks no protocol: each accepted connection is counted and closed. Pointing an address corral
must not contact at one proves "refused before a socket opens" with a real socket: `accepted`
stays 0 only if no connection ever reached it.
"""

from __future__ import annotations

import asyncio


class RecordingListener:
    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> RecordingListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
