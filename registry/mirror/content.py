"""Content sources behind the `/v2/` handlers: where manifests and blob bytes come from.

`LocalContent` serves what the store holds. The pull-through mirror wraps it (like the Docker
distribution registry's proxy wraps its storage), so the handlers never know whether bytes are
local, being filled, or still upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from registry.mirror.responses import Sent, TrackedFileResponse
from registry.model.names import Digest, ModelName
from registry.storage.catalog import Catalog
from registry.web.errors import BLOB_UNKNOWN, MANIFEST_UNKNOWN, OciError


@dataclass(frozen=True)
class ManifestEntry:
    raw: bytes
    media_type: str
    digest: Digest


class ContentSource(Protocol):
    async def manifest(self, name: ModelName, request: web.Request) -> ManifestEntry: ...

    async def manifest_by_digest(self, name: ModelName, digest: Digest, request: web.Request) -> ManifestEntry: ...

    async def blob_size(self, name: ModelName, digest: Digest, request: web.Request) -> int: ...

    async def blob_response(self, name: ModelName, digest: Digest, request: web.Request,
                            headers: Mapping[str, str]) -> web.StreamResponse:
        """The blob's bytes (206 for a Range), with `headers` set before the response starts."""
        ...


def manifest_unknown(name: ModelName | str) -> OciError:
    return MANIFEST_UNKNOWN(detail={"name": str(name)})


def blob_unknown(digest: Digest) -> OciError:
    return BLOB_UNKNOWN(detail={"digest": str(digest)})


class LocalContent:
    """Serves verified content from the catalogue and the blob store; never goes upstream.

    `on_hit` is told the bytes of each blob response it sent (the cache's hit counter).
    """

    def __init__(self, catalog: Catalog, on_hit: Sent) -> None:
        self.catalog = catalog
        self.on_hit = on_hit

    async def manifest(self, name: ModelName, request: web.Request) -> ManifestEntry:
        record = await self.catalog.get(name)
        if record is None:
            raise manifest_unknown(name)
        await self.catalog.touch(name)
        return ManifestEntry(record.raw, record.media_type, record.manifest_digest)

    async def manifest_by_digest(self, name: ModelName, digest: Digest, request: web.Request) -> ManifestEntry:
        found = await self.catalog.get_manifest(digest)
        if found is None:
            raise manifest_unknown(f"{name.repository}@{digest}")
        return ManifestEntry(found[0], found[1], digest)

    async def blob_size(self, name: ModelName, digest: Digest, request: web.Request) -> int:
        size = await self.catalog.servable_size(digest)
        if size is None:
            raise blob_unknown(digest)
        return size

    async def blob_response(self, name: ModelName, digest: Digest, request: web.Request,
                            headers: Mapping[str, str]) -> web.StreamResponse:
        await self.blob_size(name, digest, request)
        return self.file_response(digest, request, headers)

    def file_response(self, digest: Digest, request: web.Request, headers: Mapping[str, str]) -> web.FileResponse:
        """The stored blob by sendfile, with Range support; leased until sent, so never pruned
        while a client reads it."""
        lease = self.catalog.leases.acquire(digest)
        response = TrackedFileResponse(self.catalog.store.path(digest), lease, self.on_hit, chunk_size=1024 * 1024)
        response.headers.update(headers)
        response.headers["Content-Type"] = "application/octet-stream"
        response.headers["Accept-Ranges"] = "bytes"
        return response
