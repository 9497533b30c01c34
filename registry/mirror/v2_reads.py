"""`/v2/` handlers: the Docker registry HTTP API v2 subset that ollama's pull uses.

Manifests are served byte-exact with their `Docker-Content-Digest`; blob GETs answer with a
`Location` pointing at themselves (ollama's legacy downloader requires one), serve `Range`
requests with 206, and HEAD carries the exact `Content-Length` the client sizes its parts by.
"""

from __future__ import annotations

from aiohttp import web

from registry.web.errors import OciError
from registry.model.names import Digest, InvalidDigestError, InvalidNameError, ModelName
from registry.server.services import SERVICES
from registry.web.v2 import API_VERSION_HEADER, parse_digest, repository_name

async def ping(request: web.Request) -> web.Response:
    return web.json_response({}, headers=API_VERSION_HEADER)


async def get_manifest(request: web.Request) -> web.Response:
    content = request.app[SERVICES].content
    reference = request.match_info["reference"]
    if Digest.is_valid(reference.replace("%3A", ":")):
        digest = parse_digest(reference.replace("%3A", ":"))
        entry = await content.manifest_by_digest(repository_name(request), digest, request)
    else:
        entry = await content.manifest(repository_name(request, reference), request)
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


async def head_blob(request: web.Request) -> web.Response:
    content = request.app[SERVICES].content
    digest = parse_digest(request.match_info["digest"])
    size = await content.blob_size(repository_name(request), digest, request)
    return web.Response(status=200, headers={
        **API_VERSION_HEADER,
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
        "Accept-Ranges": "bytes",
    })


async def get_blob(request: web.Request) -> web.StreamResponse:
    content = request.app[SERVICES].content
    digest = parse_digest(request.match_info["digest"])
    response = await content.blob_response(repository_name(request), digest, request)
    response.headers.update(API_VERSION_HEADER)
    response.headers["Docker-Content-Digest"] = str(digest)
    return response


def routes() -> list[web.RouteDef]:
    repo = r"/v2/{ns:[^/]+}/{model:[^/]+}"
    return [
        web.get("/v2/", ping),
        web.get("/v2", ping),
        web.get(repo + "/manifests/{reference}", get_manifest),
        web.get(repo + "/blobs/{digest}", get_blob, allow_head=False),
        web.head(repo + "/blobs/{digest}", head_blob),
    ]
