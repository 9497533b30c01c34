"""ProxyContent: the pull-through mirror's ContentSource, wrapping LocalContent.

Like the Docker distribution registry's proxy wraps its storage: whatever the store holds
verified is served by `LocalContent` (sendfile); manifests, and the blobs a pulled manifest names,
come from upstream through the manifest cache and single-flight fills and are served while they
arrive. Any other blob is a 404 without asking upstream: that is what a push into corral must
see. When the egress gate refuses the upstream (offline, and the upstream not listed in
CORRAL_ALLOWED_HOSTS) nothing is contacted and unknown content is a 404 whose message says why.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from registry.egress.gate import EgressRefused, Offline
from registry.mirror.content import LocalContent, ManifestEntry, blob_unknown, manifest_unknown
from registry.mirror.fill_response import fill_response
from registry.mirror.fills import DigestMismatch, DiskFull, FillError, Fills
from registry.mirror.manifest_cache import ManifestCache
from registry.mirror.upstream import (
    BlobSource,
    Denied,
    Refused,
    Upstream,
    UpstreamError,
    default_user_agent,
)
from registry.model.names import Digest, ModelName
from registry.web.errors import BLOB_UNKNOWN, DENIED, UNAVAILABLE, OciError


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
    if isinstance(cause, Denied):  # a 401 would be a challenge to the client: ollama would ask us for a token
        return DENIED(str(cause), unknown.detail)
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
        """Answered without waiting for the bytes: a blob not stored yet has its manifest's size."""
        size = await self.catalog.servable_size(digest)
        if size is not None:
            return size
        size, _ = await self._fetchable(name, digest)
        return size

    async def blob_response(self, name: ModelName, digest: Digest, request: web.Request,
                            headers: Mapping[str, str]) -> web.StreamResponse:
        if await self.catalog.servable_size(digest) is not None:
            return self.local.file_response(digest, request, headers)
        size, media_type = await self._fetchable(name, digest)
        fill = self.fills.start(self._source(name, digest, request), size, media_type)  # or joins the running one
        try:
            await fill.wait_started()
        except FillError as exc:
            raise oci_error(exc, blob_unknown(digest)) from None
        if fill.verified:
            return self.local.file_response(digest, request, headers)
        lease = self.catalog.leases.acquire(digest)  # the blob it becomes is not pruned while still sent
        try:
            await lease.publish()
            return await fill_response(request, fill, headers)
        except FillError as exc:  # raised only before the response started
            raise oci_error(exc, blob_unknown(digest)) from None
        finally:
            lease.release()

    async def _fetchable(self, name: ModelName, digest: Digest) -> tuple[int, str]:
        """Size and media type of a blob that may come from upstream; BLOB_UNKNOWN for any other.

        A blob not stored here goes upstream (HEAD and GET alike) only when a manifest pulled for
        this repository names it (`Catalog.pulled_layer`): every pull reads its manifest first,
        while ollama's push asks HEAD for each blob before it sends any manifest. Answering a push
        from upstream would make the push fail inside an air gap (the upstream cannot be reached,
        a 502) or, with the upstream reachable, make ollama skip uploading a blob this store does
        not hold. GET follows the same rule: HEAD and GET of one URL must agree, a GET nobody's
        manifest asked for would fill the cache with a blob no model uses, and inside the air gap
        it is a quick 404 instead of a 502 after upstream retries. One push still hears of such a
        blob: into a repository whose pulled manifest names it before it was fetched. The client
        then skips it and its manifest PUT is refused (MANIFEST_BLOB_UNKNOWN), never stored
        without the blob; pulling that model first, or pushing under another name, avoids it.
        """
        layer = await self.catalog.pulled_layer(name, digest)
        if layer is None:
            raise blob_unknown(digest)
        self._check_reachable(name, digest)
        return layer

    def _check_reachable(self, name: ModelName, digest: Digest) -> None:
        """A blob not stored needs its registry: refused by the gate, it is unknown here and why."""
        try:
            self.upstream.check(self.upstream.endpoint_for(name))
        except EgressRefused as exc:
            raise oci_error(exc, blob_unknown(digest)) from None

    def _source(self, name: ModelName, digest: Digest, request: web.Request) -> BlobSource:
        return BlobSource(self.upstream.endpoint_for(name), name.repository, digest, user_agent(request))
