"""ProxyContent: the pull-through mirror's ContentSource, wrapping LocalContent.

Like the Docker distribution registry's proxy wraps its storage: whatever the store holds
verified is served by `LocalContent` (sendfile); everything else comes from upstream through the
manifest cache and single-flight fills, and is served while it arrives. When the egress gate
refuses the upstream (offline, and the upstream not listed in CORRAL_ALLOWED_HOSTS) nothing is
contacted and unknown content is a 404 whose message says why.
"""

from __future__ import annotations

from aiohttp import web

from registry.egress.gate import EgressRefused, Offline
from registry.mirror.content import LocalContent, ManifestEntry, blob_unknown, manifest_unknown
from registry.mirror.fill_response import fill_response
from registry.mirror.fills import DigestMismatch, DiskFull, FillError, Fills
from registry.mirror.manifest_cache import ManifestCache
from registry.mirror.upstream import (
    BlobSource,
    Refused,
    Upstream,
    UpstreamError,
    default_user_agent,
)
from registry.model.names import Digest, ModelName
from registry.web.errors import BLOB_UNKNOWN, UNAVAILABLE, OciError


def user_agent(request: web.Request) -> str:
    """The client's own User-Agent, forwarded: registry.ollama.ai gates models by client version."""
    return request.headers.get("User-Agent") or default_user_agent()


class PassThrough(web.HTTPException):
    """An upstream's definitive refusal (the 412 version gate, 403…) with its own status and body."""

    def __init__(self, refused: Refused) -> None:
        self.status_code = refused.status
        super().__init__(text=refused.body.decode("utf-8", "replace"),
                         content_type=refused.content_type.partition(";")[0].strip() or "text/plain")


def oci_error(exc: Exception, unknown: OciError) -> Exception:
    """Map an upstream or fill failure to what a /v2 client should see."""
    cause = exc.cause if isinstance(exc, FillError) and exc.cause is not None else exc
    if isinstance(cause, Refused):
        return unknown if cause.status == 404 else PassThrough(cause)
    if isinstance(cause, Offline):
        return unknown.error_code(f"{unknown.message}: not cached, and {cause}", unknown.detail, status=404)
    if isinstance(exc, DigestMismatch):
        return BLOB_UNKNOWN(str(exc), unknown.detail, status=502)
    if isinstance(exc, DiskFull):
        return UNAVAILABLE(str(exc), unknown.detail, status=507)
    return UNAVAILABLE(str(exc), unknown.detail, status=502)


class ProxyContent:
    def __init__(self, local: LocalContent, manifests: ManifestCache, fills: Fills, upstream: Upstream) -> None:
        self.local = local
        self.catalog = local.catalog
        self.manifests = manifests
        self.fills = fills
        self.upstream = upstream

    async def manifest(self, name: ModelName, request: web.Request) -> ManifestEntry:
        try:
            cached = await self.manifests.by_tag(name, self.upstream.endpoint_for(name), user_agent(request))
        except (UpstreamError, EgressRefused) as exc:
            raise oci_error(exc, manifest_unknown(name)) from None
        await self.catalog.touch(name)
        return ManifestEntry(cached.raw, cached.media_type, cached.digest)

    async def manifest_by_digest(self, name: ModelName, digest: Digest, request: web.Request) -> ManifestEntry:
        try:
            cached = await self.manifests.by_digest(name, digest, self.upstream.endpoint_for(name),
                                                    user_agent(request))
        except (UpstreamError, EgressRefused) as exc:
            raise oci_error(exc, manifest_unknown(f"{name.repository}@{digest}")) from None
        return ManifestEntry(cached.raw, cached.media_type, digest)

    async def blob_size(self, name: ModelName, digest: Digest, request: web.Request) -> int:
        """Answered without waiting for the bytes: a filling blob's size comes from its manifest."""
        size = await self.catalog.servable_size(digest)
        if size is not None:
            return size
        self._check_reachable(name, digest)
        fill = self.fills.in_flight.get(digest)
        if fill is not None:
            return fill.size
        info = await self.catalog.layer_info(digest)
        if info is not None:
            return info[0]
        try:
            return await self.upstream.blob_size(self._source(name, digest, request))
        except (UpstreamError, EgressRefused) as exc:
            raise oci_error(exc, blob_unknown(digest)) from None

    async def blob_response(self, name: ModelName, digest: Digest, request: web.Request) -> web.StreamResponse:
        if await self.catalog.servable_size(digest) is not None:
            return self.local.file_response(digest, request)
        fill = self.fills.in_flight.get(digest)
        if fill is None:
            self._check_reachable(name, digest)
            info = await self.catalog.layer_info(digest)
            size, media_type = info if info is not None else (await self.blob_size(name, digest, request), None)
            fill = self.fills.start(self._source(name, digest, request), size, media_type)
        try:
            await fill.wait_started()
        except FillError as exc:
            raise oci_error(exc, blob_unknown(digest)) from None
        if fill.verified:
            return self.local.file_response(digest, request)
        try:
            return await fill_response(request, fill, {"Docker-Content-Digest": str(digest)})
        except FillError as exc:  # raised only before the response started
            raise oci_error(exc, blob_unknown(digest)) from None

    def _check_reachable(self, name: ModelName, digest: Digest) -> None:
        """A blob not stored needs its registry: refused by the gate, it is unknown here and why."""
        try:
            self.upstream.check(self.upstream.endpoint_for(name))
        except EgressRefused as exc:
            raise oci_error(exc, blob_unknown(digest)) from None

    def _source(self, name: ModelName, digest: Digest, request: web.Request) -> BlobSource:
        return BlobSource(self.upstream.endpoint_for(name), name.repository, digest, user_agent(request))
