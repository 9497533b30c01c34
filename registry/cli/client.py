"""A small async HTTP client for corral's own API, used by the CLI (like ollama's api/client.go).

The CLI never touches the store directly: it talks to the server named by OLLAMA_HOST, so it
works the same against a local or a remote corral.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp

from registry.config import ListenAddress


class ClientError(Exception):
    """The server answered with an error; `str()` is the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def base_url(host: ListenAddress) -> str:
    """Where to connect: a wildcard listen address means this machine."""
    connect = host.host if host.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in connect:
        connect = f"[{connect}]"
    return f"{host.scheme}://{connect}:{host.port}"


class CorralClient:
    def __init__(self, base: str, token: str = "") -> None:
        self.base = base.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None))

    async def __aenter__(self) -> CorralClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def _raise_for(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        text = await resp.text()
        try:
            message = json.loads(text).get("error", text)
        except (json.JSONDecodeError, AttributeError):
            message = text
        if isinstance(message, dict):
            message = message.get("message", str(message))
        raise ClientError(resp.status, str(message) or f"HTTP {resp.status}")

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.base + path, json=body) as resp:
            await self._raise_for(resp)
            text = await resp.text()
            return json.loads(text) if text.strip() else None

    async def stream(self, path: str, body: Any, *, data: Any = None) -> AsyncIterator[dict[str, Any]]:
        """POST (JSON `body`, or raw `data` such as an open file) and yield NDJSON objects; an
        `{"error": …}` line raises ClientError."""
        request = {"json": body} if data is None else {"data": data}
        async with self.session.post(self.base + path, **request) as resp:
            await self._raise_for(resp)
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    raise ClientError(resp.status, event["error"])
                yield event

    @contextlib.asynccontextmanager
    async def download(self, path: str, body: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST JSON and hand over the checked response, to read a binary body as it streams."""
        async with self.session.post(self.base + path, json=body) as resp:
            await self._raise_for(resp)
            yield resp

    async def blob_exists(self, digest: str) -> bool:
        async with self.session.head(f"{self.base}/api/blobs/{digest}") as resp:
            return resp.status == 200

    async def upload_blob(self, digest: str, data: AsyncIterable[bytes]) -> None:
        """POST a blob's bytes, streamed from `data` (the server checks them against `digest`)."""
        async with self.session.post(f"{self.base}/api/blobs/{digest}", data=data) as resp:
            await self._raise_for(resp)
