"""`/api/push`: send a stored model to another corral or any Docker distribution registry.

The model's host names the destination (`corral.lan:11434/library/x` → `https://corral.lan:11434`,
`http://` with `insecure`), exactly like `ollama push`. Per blob: HEAD (skip if present), POST an
upload (with `mount`/`from` when the layer came from another model), PATCH parts with
`Content-Range`, PUT `?digest=`; then PUT the manifest bytes unchanged, so the receiving side
gets the same model digest. A 401 is answered by signing the token request with corral's own
ed25519 key. A failed part is retried from the offset the registry reports, so a flaky link
costs one part, not the whole blob. Progress lines have ollama's shape (`pushing <12 hex>`).

The destination is egress like any other: it must be CORRAL_UPSTREAM's host or listed in
CORRAL_ALLOWED_HOSTS (only the latter when offline), which the gate checks before the first
request; every request stays on the destination's own host (no redirects, no upload Location
elsewhere), so the token never travels anywhere else.

`PushHandler` serves the route with what a push reads: the catalogue (the model), the store (its
blob files), the path of corral's key, loaded (or created) when a push starts, and the gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from multidict import CIMultiDict
from yarl import URL

from registry.auth.keys import load_or_create_key
from registry.auth.token_client import TokenError, fetch_token, parse_challenge
from registry.egress.gate import Egress, EgressRefused
from registry.model.manifest import Layer
from registry.model.names import InvalidNameError, ModelName
from registry.storage.catalog import Catalog, ModelNotFound, ModelRecord
from registry.storage.store import BlobStore
from registry.web.errors import ApiError
from registry.web.jsonbody import field, model_field, parse_name, read_json_object
from registry.web.ndjson import stream_progress

NUM_PARTS, MIN_PART, MAX_PART = 16, 100_000_000, 1_000_000_000  # ollama's upload part sizing
READ_CHUNK = 1024 * 1024
MAX_RETRIES = 5
RETRY_DELAY = 1.0  # seconds before the first retry of a part; doubles each time, at most 30
PROGRESS_INTERVAL = 0.1


UPSTREAM_FAILED = 502  # the destination could not be reached or failed: not the client's mistake


class PushError(Exception):
    """The destination refused or kept failing; the message says which request and why.

    `status` is what `/api/push` answers before its stream starts: the destination's own 401 or
    403 keeps its meaning (the client must sign in or may not push there), anything else the
    destination did is a bad gateway (502), as a network failure is.
    """

    def __init__(self, message: str, status: int = UPSTREAM_FAILED) -> None:
        super().__init__(message)
        self.status = status


class TransientError(Exception):
    """A part the registry may accept when sent again: a 5xx, or 416 after a lost response."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDict[str]
    text: str


class RegistrySession:
    """Requests to the registry at `base`, through the gate, answering a 401 challenge once with a
    signed token request."""

    def __init__(self, http: aiohttp.ClientSession, key: Ed25519PrivateKey, egress: Egress, base: str) -> None:
        self.http = http
        self.key = key
        self.egress = egress
        self.base = base
        self.token = ""

    async def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                      body: Callable[[], Any] | None = None) -> Reply:
        """`body` is a factory, because a body sent before a 401 must be sent again."""
        for attempt in range(2):
            sent = dict(headers or {})
            if self.token:
                sent["Authorization"] = f"Bearer {self.token}"
            async with await self.egress.registry_request(self.http, method, URL(url, encoded=True),
                                                          registry=self.base, headers=sent,
                                                          data=body() if body else None) as resp:
                reply = Reply(resp.status, CIMultiDict(resp.headers), await resp.text(errors="replace"))
            if reply.status != 401 or attempt:
                return reply
            challenge = parse_challenge(reply.headers.get("WWW-Authenticate", ""))
            if challenge is None:
                break
            self.token = await fetch_token(self.http, challenge, urlsplit(url).netloc, self.key, self.egress)
        raise PushError(f"{method} {url}: unauthorized: {reply.text.strip()}", 401)


@dataclass
class Progress:
    layer: Layer
    completed: int = 0

    def event(self) -> dict[str, Any]:
        d = self.layer.digest
        return {"status": f"pushing {d.short}", "digest": str(d), "total": self.layer.size,
                "completed": self.completed}


def part_size(total: int) -> int:
    return min(max(total // NUM_PARTS, MIN_PART), MAX_PART)


def _checked(reply: Reply, what: str) -> Reply:
    if reply.status >= 400:
        status = reply.status if reply.status in (401, 403) else UPSTREAM_FAILED
        raise PushError(f"{what}: {reply.status}: {reply.text.strip()}", status)
    return reply


def _next_url(reply: Reply, current: str) -> str:
    location = reply.headers.get("Docker-Upload-Location") or reply.headers.get("Location")
    if not location:
        raise PushError(f"registry answered {reply.status} without an upload Location")
    return urljoin(current, location)


async def _file_part(path: Path, start: int, end: int, progress: Progress) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(f.seek, start)
        remaining = end - start
        while remaining:
            chunk = await asyncio.to_thread(f.read, min(READ_CHUNK, remaining))
            if not chunk:
                raise PushError(f"{path} is shorter than its manifest says", 500)  # our store, not theirs
            remaining -= len(chunk)
            progress.completed += len(chunk)
            yield chunk
    finally:
        f.close()


class Pusher:
    def __init__(self, session: RegistrySession, base: str, repository: str) -> None:
        self.session = session
        self.base = base
        self.repository = repository

    async def blob(self, layer: Layer, path: Path, progress: Progress) -> None:
        url = f"{self.base}/v2/{self.repository}/blobs/{layer.digest}"
        head = await self.session.request("HEAD", url)
        if head.status < 400:
            progress.completed = layer.size
            return
        if head.status != 404:
            _checked(head, f"HEAD {url}")
        start = f"{self.base}/v2/{self.repository}/blobs/uploads/"
        mount = _mount_query(layer)
        reply = _checked(await self.session.request("POST", start + mount), f"POST {start}")
        if reply.status == 201:
            progress.completed = layer.size
            return
        location = await self._parts(_next_url(reply, start), layer, path, progress)
        commit = location + ("&" if "?" in location else "?") + urlencode({"digest": str(layer.digest)})
        _checked(await self.session.request("PUT", commit, {"Content-Type": "application/octet-stream",
                                                            "Content-Length": "0"}), "commit upload")

    async def _parts(self, location: str, layer: Layer, path: Path, progress: Progress) -> str:
        offset, failures, size = 0, 0, part_size(layer.size)
        while offset < layer.size:
            start, end = offset, min(offset + size, layer.size)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - start),
                       "Content-Range": f"{start}-{end - 1}"}
            try:
                reply = await self.session.request(
                    "PATCH", location, headers, lambda s=start, e=end: _file_part(path, s, e, progress))
                if reply.status == 416 or reply.status >= 500:
                    raise TransientError(f"PATCH: {reply.status}: {reply.text.strip()}")
                location = _next_url(_checked(reply, "PATCH"), location)
                offset = end
            except (aiohttp.ClientError, TimeoutError, TransientError) as exc:
                failures += 1
                if failures > MAX_RETRIES:
                    raise PushError(f"uploading {layer.digest.short} failed {failures} times: {exc}") from None
                await asyncio.sleep(min(RETRY_DELAY * 2 ** (failures - 1), 30))
                offset = await self._resume_offset(location)
            progress.completed = offset
        return location

    async def _resume_offset(self, location: str) -> int:
        """Where the registry's copy ends (`Range: 0-<last>`), to continue from there."""
        reply = _checked(await self.session.request("GET", location), "upload status")
        last = reply.headers.get("Range", "0-0").rpartition("-")[2]
        return int(last) + 1 if last.isdigit() and int(last) > 0 else 0

    async def manifest(self, record: ModelRecord, tag: str) -> None:
        url = f"{self.base}/v2/{self.repository}/manifests/{tag}"
        _checked(await self.session.request("PUT", url, {"Content-Type": record.media_type},
                                            lambda: record.raw), "pushing manifest")


def _mount_query(layer: Layer) -> str:
    if not layer.from_:
        return ""
    try:
        source = ModelName.parse(layer.from_)
    except InvalidNameError:
        return ""
    return "?" + urlencode({"mount": str(layer.digest), "from": source.repository})


class PushHandler:
    """`/api/push` of one server."""

    def __init__(self, catalog: Catalog, store: BlobStore, key_path: Path, egress: Egress) -> None:
        self.catalog = catalog
        self.store = store
        self.key_path = key_path
        self.egress = egress

    async def push(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request)
        name = parse_name(model_field(body))
        insecure = bool(field(body, "insecure", bool, False))
        stream = bool(field(body, "stream", bool, True))
        try:
            record = await self.catalog.require(name)
        except ModelNotFound:
            raise ApiError(404, f"model '{name.display_shortest()}' not found") from None
        try:
            self.egress.check_registry(_base(record, insecure))  # refused before the stream starts, with its status
        except EgressRefused as exc:
            raise ApiError(exc.status, f"push {name.display_shortest()}: {exc}") from None
        return await stream_progress(request, stream, self.push_events(record, insecure))

    async def push_events(self, record: ModelRecord, insecure: bool) -> AsyncIterator[dict[str, Any]]:
        yield {"status": "retrieving manifest"}
        name = record.name
        key = await asyncio.to_thread(load_or_create_key, self.key_path)
        base = _base(record, insecure)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
        try:
            async with self.egress.session(timeout=timeout) as http:
                pusher = Pusher(RegistrySession(http, key, self.egress, base), base, name.repository)
                for layer in record.manifest.all_layers:
                    progress = Progress(layer)
                    task = asyncio.create_task(pusher.blob(layer, self.store.path(layer.digest), progress))
                    try:
                        while not task.done():
                            await asyncio.wait({task}, timeout=PROGRESS_INTERVAL)
                            yield progress.event()
                        task.result()
                    finally:
                        task.cancel()
                yield {"status": "pushing manifest"}
                await pusher.manifest(record, name.tag)
        except EgressRefused as exc:
            raise ApiError(exc.status, f"push {name.display_shortest()}: {exc}") from None
        except PushError as exc:
            raise ApiError(exc.status, f"push {name.display_shortest()}: {exc}") from None
        except (TokenError, aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(UPSTREAM_FAILED, f"push {name.display_shortest()}: {exc}") from None
        yield {"status": "success"}


def _base(record: ModelRecord, insecure: bool) -> str:
    """The destination registry a model's name points at, over http only when asked (as ollama)."""
    return f"{'http' if insecure else 'https'}://{record.name.host}"
