"""`/v2/` handlers: the Docker registry HTTP API v2 subset that ollama's pull uses.

Manifests are served byte-exact with their `Docker-Content-Digest`; blob GETs serve `Range`
requests with 206, and HEAD carries the exact `Content-Length` the client sizes its parts by.
A blob GET without `Range` names its data URL in `Location`: ollama's legacy downloader resolves
the URL it fetches the parts from that way and fails without one. It is the blob's own path;
with CORRAL_PULL_AUTH presigned, because ollama sends no token with the parts.
"""

from __future__ import annotations

from aiohttp import web

from registry.auth.presigned import PresignedBlobs
from registry.mirror.content import ContentSource
from registry.model.names import Digest, ModelName
from registry.web.v2 import API_VERSION_HEADER, parse_digest, repository_name


class V2Reads:
    """The read side of `/v2/`, over whichever `ContentSource` it is given (local or proxy)."""

    def __init__(self, content: ContentSource, presigned: PresignedBlobs | None = None) -> None:
        self.content = content
        self.presigned = presigned  # set when pulls need a token (CORRAL_PULL_AUTH)

    def _name(self, request: web.Request, reference: str = "latest") -> ModelName:
        return repository_name(request, reference)

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({}, headers=API_VERSION_HEADER)

    async def get_manifest(self, request: web.Request) -> web.Response:
        reference = request.match_info["reference"]
        if Digest.is_valid(reference.replace("%3A", ":")):
            digest = parse_digest(reference.replace("%3A", ":"))
            entry = await self.content.manifest_by_digest(self._name(request), digest, request)
        else:
            entry = await self.content.manifest(self._name(request, reference), request)
        headers = {
            **API_VERSION_HEADER,
            "Docker-Content-Digest": str(entry.digest),
            "Content-Type": entry.media_type,
            "Content-Length": str(len(entry.raw)),
            "ETag": f'"{entry.digest}"',
        }
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        return web.Response(body=entry.raw, headers=headers)

    async def head_blob(self, request: web.Request) -> web.Response:
        digest = parse_digest(request.match_info["digest"])
        size = await self.content.blob_size(self._name(request), digest, request)
        return web.Response(status=200, headers={
            **API_VERSION_HEADER,
            "Docker-Content-Digest": str(digest),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "Accept-Ranges": "bytes",
        })

    async def get_blob(self, request: web.Request) -> web.StreamResponse:
        digest = parse_digest(request.match_info["digest"])
        name = self._name(request)
        headers = {**API_VERSION_HEADER, "Docker-Content-Digest": str(digest)}
        if "Range" not in request.headers:
            headers["Location"] = self._data_url(request, name, digest)
        return await self.content.blob_response(name, digest, request, headers)

    def _data_url(self, request: web.Request, name: ModelName, digest: Digest) -> str:
        if self.presigned is None:
            return str(request.rel_url)
        return str(request.rel_url.with_query(self.presigned.query(name.repository, digest)))
