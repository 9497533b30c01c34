"""`POST /api/pull`: ollama's pull endpoint, with corral's mirror behind it.

The progress stream has exactly ollama's shapes (protocol doc §6.2): `pulling manifest`, then per
layer (layers, then config) `pulling <12 hex>` lines with digest/total/completed every 60 ms
(completed omitted while 0; one line with completed == total for a blob already present),
`verifying sha256 digest`, `writing manifest`, `removing unused layers` when a moved tag left
layers unreferenced (unless OLLAMA_NOPRUNE), `success`. The blobs come through the same
single-flight fills as /v2 requests, all layers at once; the tag is written last, so a model only
appears in the catalogue once every blob is verified.

Hosts: a name without host (or naming registry.ollama.ai, or the upstream's own host) is fetched
from CORRAL_UPSTREAM; a host listed in CORRAL_ALLOWED_HOSTS over https, or http with `insecure`;
any other host is refused with 400 before any connection is made. Offline, what is cached is
served, and the egress gate refuses (503) what would need a registry that is not listed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from registry.egress.gate import EgressRefused, Offline
from registry.mirror.fills import DigestMismatch, Fill, FillError, Fills
from registry.mirror.manifest_cache import ManifestCache
from registry.mirror.upstream import (
    BlobSource,
    Denied,
    Endpoint,
    Refused,
    Upstream,
    UpstreamError,
    default_user_agent,
)
from registry.model.manifest import Layer
from registry.model.names import Digest, ModelName
from registry.storage.catalog import Catalog
from registry.web.errors import ApiError
from registry.web.jsonbody import field, model_field, parse_name, read_json_object
from registry.web.ndjson import stream_progress

PROGRESS_INTERVAL = 0.06  # ollama's progress tick


class Puller:
    """ollama's pull as a stream of progress events; used by `POST /api/pull`, by keep-warm and by
    `/api/create` for a `from` model the store lacks."""

    def __init__(self, upstream: Upstream, manifests: ManifestCache, fills: Fills, catalog: Catalog, *,
                 noprune: bool) -> None:
        self.upstream = upstream
        self.manifests = manifests
        self.fills = fills
        self.catalog = catalog
        self.noprune = noprune

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request)
        name = parse_name(model_field(body))
        insecure = field(body, "insecure", bool, False)
        stream = field(body, "stream", bool, True)
        endpoint = self.endpoint_for(name, insecure)
        return await stream_progress(request, stream, self.events(name, endpoint))

    def endpoint_for(self, name: ModelName, insecure: bool = False) -> Endpoint:
        """The registry `name` is pulled from; a host the mirror may not reach is a 400 here,
        before any connection and before a stream starts."""
        try:
            return self.upstream.endpoint_for(name, insecure)
        except EgressRefused as exc:
            raise ApiError(exc.status, str(exc)) from None

    async def events(self, name: ModelName, endpoint: Endpoint) -> AsyncIterator[dict[str, Any]]:
        user_agent = default_user_agent()
        yield {"status": "pulling manifest"}
        try:
            cached = await self.manifests.by_tag(name, endpoint, user_agent, save=False)
        except (UpstreamError, EgressRefused) as exc:
            raise manifest_error(name, exc) from None
        layers = cached.parsed.all_layers
        # leased until tagged: a prune must not collect a layer this pull found present but has not referenced yet
        with self.catalog.leases.hold(*(layer.digest for layer in layers)):
            await self.catalog.leases.publish(*(layer.digest for layer in layers))
            fills: dict[Digest, Fill] = {}
            for layer in layers:
                if layer.digest not in fills and await self.catalog.servable_size(layer.digest) is None:
                    try:
                        self.upstream.check(endpoint)
                    except EgressRefused as exc:
                        raise ApiError(exc.status, f"blob {layer.digest} of {name.display_shortest()} is not "
                                                   f"cached, and {exc}") from None
                    source = BlobSource(endpoint, name.repository, layer.digest, user_agent)
                    fills[layer.digest] = self.fills.start(source, layer.size, layer.media_type)
            for layer in layers:
                fill = fills.get(layer.digest)
                if fill is None:
                    yield _progress(layer, layer.size)
                    continue
                async for event in _follow(fill, layer):
                    yield event
            yield {"status": "verifying sha256 digest"}
            yield {"status": "writing manifest"}
            await self.manifests.tag(name, cached)
            await self.catalog.touch(name)  # a pull is a use: least-recently-used eviction goes by it
            if cached.previous is not None and not self.noprune:
                yield {"status": "removing unused layers"}
                await self.catalog.collect_garbage([cached.previous], protected=self.fills.in_flight.digests())
            yield {"status": "success"}


async def _follow(fill: Fill, layer: Layer) -> AsyncIterator[dict[str, Any]]:
    """ollama's 60 ms progress ticks for one blob, until its fill has a verdict."""
    while not fill.finished:
        yield _progress(layer, fill.completed)
        with contextlib.suppress(TimeoutError, FillError):
            async with asyncio.timeout(PROGRESS_INTERVAL):
                await fill.wait_finished()
    if isinstance(fill.error, DigestMismatch):
        raise ApiError(502, str(fill.error))
    if fill.error is not None:
        raise ApiError(_status(fill.error.cause), f"pulling {layer.digest}: {fill.error}")
    yield _progress(layer, layer.size)


def _progress(layer: Layer, completed: int) -> dict[str, Any]:
    event: dict[str, Any] = {"status": f"pulling {layer.digest.short}", "digest": str(layer.digest),
                             "total": layer.size}
    if completed:
        event["completed"] = completed
    return event


def _status(cause: BaseException | None) -> int:
    """The status of a pull the upstream refused: its own, but 403 for a refusal of corral itself
    (a 401 makes ollama's client report only "401 Unauthorized", or ask the user to sign in)."""
    if isinstance(cause, Denied):
        return 403
    return cause.status if isinstance(cause, Refused) else 502


def manifest_error(name: ModelName, exc: UpstreamError | EgressRefused) -> ApiError:
    """ollama's wording: `pull model manifest: file does not exist`, `…: 412: <body>`."""
    if isinstance(exc, Refused):
        if exc.status == 404:
            return ApiError(404, "pull model manifest: file does not exist")
        return ApiError(_status(exc), f"pull model manifest: {exc}")
    if isinstance(exc, Offline):
        return ApiError(exc.status, f"pull model manifest: {name.display_shortest()} is not cached, and {exc}")
    if isinstance(exc, EgressRefused):
        return ApiError(exc.status, f"pull model manifest: {exc}")
    return ApiError(502, f"pull model manifest: {exc}")

