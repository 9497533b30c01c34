"""`/v2/` write handlers: the registry side of ollama's (and Docker's) push, protocol doc §4.

POST `…/blobs/uploads/` opens a session (201 at once when `mount`/`digest` names a blob we hold),
PATCH appends the `Content-Range: a-b` chunk and answers 202 with an absolute `Location` (ollama
parses it with url.Parse and uses it verbatim), PUT `?digest=` verifies the assembled sha256 and
publishes the blob, PUT `…/manifests/<tag>` stores the manifest once every blob it names is here.
The auth middleware has already checked the push token when a handler runs.

`V2Writes` holds what the handlers use: the upload sessions, and the store and catalogue a
finished blob or manifest goes into and a pushed manifest's layers are checked against. A pushed
`/v2/<ns>/<model>` is stored as registry.ollama.ai's `<ns>/<model>` (`web.v2.repository_name`),
the name the same path is pulled by.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

from aiohttp import web

from registry.model.manifest import ManifestError, parse_manifest
from registry.model.names import Digest, ModelName
from registry.storage.catalog import Catalog, ModelNotFound, manifest_digest
from registry.storage.store import BlobStore, BlobTooLargeError
from registry.storage.uploads import IncompleteChunkError, Upload, UploadGone, UploadRangeError, UploadStore
from registry.web.errors import (
    BLOB_UPLOAD_INVALID,
    BLOB_UPLOAD_UNKNOWN,
    DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    SIZE_INVALID,
)
from registry.web.v2 import API_VERSION_HEADER, parse_digest, repository_name

MAX_MANIFEST = 4 * 1024 * 1024
_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


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


def _content_range(request: web.Request) -> int | None:
    """Start offset from `Content-Range: a-b` (ollama/Docker), or None to append at the end."""
    text = request.headers.get("Content-Range")
    if text is None:
        return None
    m = _RANGE.match(text.strip())
    if not m or int(m.group(2)) < int(m.group(1)):
        raise BLOB_UPLOAD_INVALID(f"invalid Content-Range {text!r}", status=416)
    start, end = int(m.group(1)), int(m.group(2))
    if request.content_length is not None and request.content_length != end - start + 1:
        raise BLOB_UPLOAD_INVALID("Content-Range does not match Content-Length")
    return start


def _same_repository(a: ModelName, b: ModelName) -> bool:
    """Same host/namespace/model, compared case-insensitively like ollama matches names."""
    return a.key.rsplit(":", 1)[0] == b.key.rsplit(":", 1)[0]


class V2Writes:
    """The `/v2/` write handlers of one server."""

    def __init__(self, uploads: UploadStore, store: BlobStore, catalog: Catalog) -> None:
        self.uploads = uploads
        self.store = store
        self.catalog = catalog

    def _name(self, request: web.Request, reference: str = "latest") -> ModelName:
        return repository_name(request, reference)

    def _repo(self, request: web.Request) -> str:
        return self._name(request).repository

    def _blob_created(self, request: web.Request, digest: Digest) -> web.Response:
        return web.Response(status=201, headers={
            **API_VERSION_HEADER,
            "Location": _absolute(request, f"/v2/{self._repo(request)}/blobs/{digest}"),
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        })

    async def _session(self, request: web.Request) -> Upload:
        upload = await self.uploads.get(request.match_info["upload_id"], self._repo(request))
        if upload is None:
            raise BLOB_UPLOAD_UNKNOWN()
        return upload

    @contextlib.asynccontextmanager
    async def _writing(self, upload: Upload) -> AsyncIterator[None]:
        """Be the session's one writer; it is unknown if another node finished it meanwhile."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.uploads.hold(upload))
            except UploadGone:
                raise BLOB_UPLOAD_UNKNOWN() from None
            yield

    async def start_upload(self, request: web.Request) -> web.Response:
        """POST: 201 when the blob named by `mount` (cross-repo mount) or `digest` is already here."""
        for param in ("mount", "digest"):
            if param in request.query:
                digest = parse_digest(request.query[param])
                if await self.catalog.servable_size(digest) is not None:
                    return self._blob_created(request, digest)
        upload = await self.uploads.create(self._repo(request))
        return web.Response(status=202, headers=_upload_headers(request, upload))

    async def upload_status(self, request: web.Request) -> web.Response:
        """GET on the session: how much arrived, so a client can resume after a failure."""
        upload = await self._session(request)
        return web.Response(status=204, headers=_upload_headers(request, upload))

    async def _append(self, request: web.Request, upload: Upload, start: int | None) -> None:
        try:
            await self.uploads.append(upload, start, request.content.iter_chunked(1024 * 1024),
                                      request.content_length)
        except UploadRangeError as exc:
            raise BLOB_UPLOAD_INVALID(str(exc), {"range": f"0-{max(exc.size - 1, 0)}"}, status=416) from None
        except BlobTooLargeError as exc:
            raise SIZE_INVALID(str(exc), status=413) from None
        except IncompleteChunkError as exc:
            raise BLOB_UPLOAD_INVALID(str(exc)) from None

    async def patch_upload(self, request: web.Request) -> web.Response:
        upload = await self._session(request)
        start = _content_range(request)
        async with self._writing(upload):
            await self._append(request, upload, start)
        return web.Response(status=202, headers=_upload_headers(request, upload))

    async def finish_upload(self, request: web.Request) -> web.Response:
        """PUT `?digest=`: append any final chunk, verify the sha256, publish the blob."""
        if "digest" not in request.query:
            raise DIGEST_INVALID("digest parameter is required")
        expected = parse_digest(request.query["digest"])
        upload = await self._session(request)
        async with self._writing(upload):
            if request.body_exists:
                await self._append(request, upload, _content_range(request))
            actual = await self.uploads.digest(upload)
            if actual != expected:
                await self.uploads.discard(upload)
                raise DIGEST_INVALID(f"digest mismatch, expected {expected}, got {actual}",
                                     {"digest": str(expected)})
            await self.uploads.sync(upload)
            result = await self.store.link_or_copy(upload.data_path, actual)
            await self.catalog.record_blob(actual, result.size)
            await self.uploads.discard(upload)
        return self._blob_created(request, actual)

    async def cancel_upload(self, request: web.Request) -> web.Response:
        upload = await self._session(request)
        async with self._writing(upload):
            await self.uploads.discard(upload)
        return web.Response(status=204)

    async def put_manifest(self, request: web.Request) -> web.Response:
        """Store a pushed manifest byte for byte, under a tag, or by digest (then checked).

        Every blob it names must be stored here, whatever an upstream holds: the manifest is
        refused (400 MANIFEST_BLOB_UNKNOWN with the digest, nothing stored) rather than listed
        as a model whose blobs this registry cannot serve.
        """
        if request.content_length is not None and request.content_length > MAX_MANIFEST:
            raise MANIFEST_INVALID("manifest too large", status=413)
        raw = await request.read()
        if len(raw) > MAX_MANIFEST:
            raise MANIFEST_INVALID("manifest too large", status=413)
        try:
            parsed = parse_manifest(raw)
        except ManifestError as exc:
            raise MANIFEST_INVALID(str(exc)) from None
        reference = request.match_info["reference"].replace("%3A", ":")
        if Digest.is_valid(reference) and manifest_digest(raw) != parse_digest(reference):
            raise DIGEST_INVALID("manifest digest does not match the reference")
        for layer in parsed.all_layers:
            size = await self.catalog.servable_size(layer.digest)
            if size is None:
                raise MANIFEST_BLOB_UNKNOWN(detail={"digest": str(layer.digest)})
            if size != layer.size:
                raise SIZE_INVALID(f"blob {layer.digest} is {size} bytes, manifest says {layer.size}")
        if Digest.is_valid(reference):
            digest, _ = await self.catalog.save_manifest(raw)
        else:
            digest = await self.catalog.put_manifest(self._name(request, reference), raw)
        return web.Response(status=201, headers={
            **API_VERSION_HEADER,
            "Location": _absolute(request, f"/v2/{self._repo(request)}/manifests/{digest}"),
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        })

    async def delete_manifest(self, request: web.Request) -> web.Response:
        """DELETE a tag, or by digest every tag of this repository pointing at that manifest."""
        reference = request.match_info["reference"].replace("%3A", ":")
        if Digest.is_valid(reference):
            digest, repo = parse_digest(reference), self._name(request)
            names = [r.name for r in await self.catalog.list_models()
                     if r.manifest_digest == digest and _same_repository(r.name, repo)]
        else:
            names = [self._name(request, reference)]
        unknown = MANIFEST_UNKNOWN(detail={"reference": reference})
        if not names:
            raise unknown
        for name in names:
            try:
                await self.catalog.delete(name)
            except ModelNotFound:
                raise unknown from None
        return web.Response(status=202, headers={**API_VERSION_HEADER, "Content-Length": "0"})
