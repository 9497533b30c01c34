"""`/v2/` write handlers: the registry side of ollama's (and Docker's) push, protocol doc §4.

POST `…/blobs/uploads/` opens a session (201 at once when `mount`/`digest` names a blob we hold),
PATCH appends the `Content-Range: a-b` chunk and answers 202 with an absolute `Location` (ollama
parses it with url.Parse and uses it verbatim), PUT `?digest=` verifies the assembled sha256 and
publishes the blob, PUT `…/manifests/<tag>` stores the manifest once every blob it names is here.
The auth middleware has already checked the push token when a handler runs.
"""

from __future__ import annotations

import re

from aiohttp import web

from registry.storage.catalog import ModelNotFound
from registry.web.errors import OciError
from registry.model.manifest import ManifestError, parse_manifest
from registry.model.names import Digest, ModelName
from registry.web.v2 import API_VERSION_HEADER, parse_digest, repository_name
from registry.server.services import SERVICES
from registry.storage.store import BlobTooLargeError
from registry.storage.uploads import IncompleteChunkError, Upload, UploadRangeError, UploadStore

UPLOADS: web.AppKey[UploadStore] = web.AppKey("uploads", UploadStore)
MAX_MANIFEST = 4 * 1024 * 1024
_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


def _repo(request: web.Request) -> str:
    return repository_name(request).repository


def _absolute(request: web.Request, path: str) -> str:
    return str(request.url.with_path(path).with_query(None))


def _upload_headers(request: web.Request, upload: Upload) -> dict[str, str]:
    location = _absolute(request, f"/v2/{upload.repository}/blobs/uploads/{upload.id}")
    return {
        **API_VERSION_HEADER,
        "Location": location,
        "Docker-Upload-Location": location,
        "Docker-Upload-UUID": upload.id,
        "Range": f"0-{max(upload.size - 1, 0)}",
        "Content-Length": "0",
    }


def _blob_created(request: web.Request, digest: Digest) -> web.Response:
    return web.Response(status=201, headers={
        **API_VERSION_HEADER,
        "Location": _absolute(request, f"/v2/{_repo(request)}/blobs/{digest}"),
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    })


async def _session(request: web.Request) -> Upload:
    upload = await request.app[UPLOADS].get(request.match_info["upload_id"], _repo(request))
    if upload is None:
        raise OciError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
    return upload


async def start_upload(request: web.Request) -> web.Response:
    """POST: 201 when the blob named by `mount` (cross-repo mount) or `digest` is already here."""
    catalog = request.app[SERVICES].catalog
    for param in ("mount", "digest"):
        if param in request.query:
            digest = parse_digest(request.query[param])
            if await catalog.servable_size(digest) is not None:
                return _blob_created(request, digest)
    upload = await request.app[UPLOADS].create(_repo(request))
    return web.Response(status=202, headers=_upload_headers(request, upload))


async def upload_status(request: web.Request) -> web.Response:
    """GET on the session: how much arrived, so a client can resume after a failure."""
    upload = await _session(request)
    return web.Response(status=204, headers=_upload_headers(request, upload))


async def _append(request: web.Request, upload: Upload, start: int | None) -> None:
    uploads = request.app[UPLOADS]
    try:
        await uploads.append(upload, start, request.content.iter_chunked(1024 * 1024), request.content_length)
    except UploadRangeError as exc:
        raise OciError(416, "BLOB_UPLOAD_INVALID", str(exc), {"range": f"0-{max(exc.size - 1, 0)}"}) from None
    except BlobTooLargeError as exc:
        raise OciError(413, "SIZE_INVALID", str(exc)) from None
    except IncompleteChunkError as exc:
        raise OciError(400, "BLOB_UPLOAD_INVALID", str(exc)) from None


def _content_range(request: web.Request) -> int | None:
    """Start offset from `Content-Range: a-b` (ollama/Docker), or None to append at the end."""
    text = request.headers.get("Content-Range")
    if text is None:
        return None
    m = _RANGE.match(text.strip())
    if not m or int(m.group(2)) < int(m.group(1)):
        raise OciError(416, "BLOB_UPLOAD_INVALID", f"invalid Content-Range {text!r}")
    start, end = int(m.group(1)), int(m.group(2))
    if request.content_length is not None and request.content_length != end - start + 1:
        raise OciError(400, "BLOB_UPLOAD_INVALID", "Content-Range does not match Content-Length")
    return start


async def patch_upload(request: web.Request) -> web.Response:
    upload = await _session(request)
    start = _content_range(request)
    async with upload.lock:
        await _append(request, upload, start)
    return web.Response(status=202, headers=_upload_headers(request, upload))


async def finish_upload(request: web.Request) -> web.Response:
    """PUT `?digest=`: append any final chunk, verify the sha256, publish the blob."""
    services = request.app[SERVICES]
    uploads = request.app[UPLOADS]
    if "digest" not in request.query:
        raise OciError(400, "DIGEST_INVALID", "digest parameter is required")
    expected = parse_digest(request.query["digest"])
    upload = await _session(request)
    async with upload.lock:
        if request.body_exists:
            await _append(request, upload, _content_range(request))
        actual = await uploads.digest(upload)
        if actual != expected:
            await uploads.discard(upload)
            raise OciError(400, "DIGEST_INVALID", f"digest mismatch, expected {expected}, got {actual}",
                           {"digest": str(expected)})
        await uploads.sync(upload)
        result = await services.store.link_or_copy(upload.data_path, actual)
        await services.catalog.record_blob(actual, result.size)
        await uploads.discard(upload)
    return _blob_created(request, actual)


async def cancel_upload(request: web.Request) -> web.Response:
    upload = await _session(request)
    async with upload.lock:
        await request.app[UPLOADS].discard(upload)
    return web.Response(status=204)


async def put_manifest(request: web.Request) -> web.Response:
    """Store a pushed manifest byte for byte, under a tag, or by digest (then checked).

    Every blob it names must be one this registry can serve — the same answer a HEAD gave the
    client, which skipped uploading the blobs we said we had.
    """
    services = request.app[SERVICES]
    catalog = services.catalog
    if request.content_length is not None and request.content_length > MAX_MANIFEST:
        raise OciError(413, "MANIFEST_INVALID", "manifest too large")
    raw = await request.read()
    if len(raw) > MAX_MANIFEST:
        raise OciError(413, "MANIFEST_INVALID", "manifest too large")
    try:
        parsed = parse_manifest(raw)
    except ManifestError as exc:
        raise OciError(400, "MANIFEST_INVALID", str(exc)) from None
    for layer in parsed.all_layers:
        try:
            size = await services.content.blob_size(repository_name(request), layer.digest, request)
        except OciError:
            raise OciError(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry",
                           {"digest": str(layer.digest)}) from None
        if size != layer.size:
            raise OciError(400, "SIZE_INVALID", f"blob {layer.digest} is {size} bytes, manifest says {layer.size}")
    reference = request.match_info["reference"].replace("%3A", ":")
    if Digest.is_valid(reference):
        digest, _ = await catalog.save_manifest(raw)
        if digest != parse_digest(reference):
            raise OciError(400, "DIGEST_INVALID", "manifest digest does not match the reference")
    else:
        digest = await catalog.put_manifest(repository_name(request, reference), raw)
    return web.Response(status=201, headers={
        **API_VERSION_HEADER,
        "Location": _absolute(request, f"/v2/{_repo(request)}/manifests/{digest}"),
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    })


async def delete_manifest(request: web.Request) -> web.Response:
    """DELETE a tag, or by digest every tag of this repository pointing at that manifest."""
    catalog = request.app[SERVICES].catalog
    reference = request.match_info["reference"].replace("%3A", ":")
    if Digest.is_valid(reference):
        digest, repo = parse_digest(reference), repository_name(request)
        names = [r.name for r in await catalog.list_models()
                 if r.manifest_digest == digest and _same_repository(r.name, repo)]
    else:
        names = [repository_name(request, reference)]
    unknown = OciError(404, "MANIFEST_UNKNOWN", "manifest unknown", {"reference": reference})
    if not names:
        raise unknown
    for name in names:
        try:
            await catalog.delete(name)
        except ModelNotFound:
            raise unknown from None
    return web.Response(status=202, headers={**API_VERSION_HEADER, "Content-Length": "0"})


def _same_repository(a: ModelName, b: ModelName) -> bool:
    """Same host/namespace/model, compared case-insensitively like ollama matches names."""
    return a.key.rsplit(":", 1)[0] == b.key.rsplit(":", 1)[0]


def routes() -> list[web.RouteDef]:
    repo = r"/v2/{ns:[^/]+}/{model:[^/]+}"
    session = repo + r"/blobs/uploads/{upload_id:[0-9a-f]{32}}"
    return [
        web.post(repo + "/blobs/uploads/", start_upload),
        web.post(repo + "/blobs/uploads", start_upload),
        web.get(session, upload_status, allow_head=False),
        web.patch(session, patch_upload),
        web.put(session, finish_upload),
        web.delete(session, cancel_upload),
        web.put(repo + "/manifests/{reference}", put_manifest),
        web.delete(repo + "/manifests/{reference}", delete_manifest),
    ]
