"""Adopt the models of an existing ollama store (`~/.ollama/models`, protocol doc §5.4).

Every `manifests/<host>/<namespace>/<model>/<tag>` file becomes a corral tag of the same name,
with its manifest bytes unchanged (so `ollama list` and `corral list` show the same IDs). Each
blob it names (`blobs/sha256-<hex>`) is hashed before it is adopted: on the same filesystem it is
hard-linked (no bytes copied, no extra disk used), elsewhere copied while hashing. A model with a
missing or corrupt blob is skipped and reported; the others are still imported.

`OllamaFolderImport` serves the route with the two things an import writes to: the store and
the catalogue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from registry.model.manifest import Layer, ManifestError, parse_manifest
from registry.model.names import InvalidNameError, ModelName
from registry.storage.catalog import Catalog
from registry.storage.store import BlobError, BlobStore, hash_file
from registry.web.errors import ApiError
from registry.web.jsonbody import field, read_json_object
from registry.web.ndjson import stream_progress

MAX_MANIFEST = 4 * 1024 * 1024


class ImportProblem(Exception):
    """Why one model could not be imported."""


def _scan(root: Path) -> list[tuple[str, Path]]:
    """Manifest files exactly four levels below manifests/, as ollama lists them."""
    base = root / "manifests"
    return [(str(p.relative_to(base)), p) for p in sorted(base.glob("*/*/*/*")) if p.is_file()]


def _read_manifest(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read(MAX_MANIFEST + 1)
    if len(raw) > MAX_MANIFEST:
        raise ImportProblem("manifest is too large")
    return raw


def _same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


class OllamaFolderImport:
    """`/api/corral/import/ollama` of one server."""

    def __init__(self, catalog: Catalog, store: BlobStore) -> None:
        self.catalog = catalog
        self.store = store

    async def _adopt(self, source: Path, layer: Layer) -> None:
        """Verify `source` against the layer, then hard-link (same filesystem) or copy it in."""
        if not await asyncio.to_thread(source.is_file):
            raise ImportProblem(f"blob {layer.digest} is missing")
        if await asyncio.to_thread(_same_filesystem, source, self.store.root):
            digest, size = await hash_file(source)
            if digest != layer.digest or size != layer.size:
                raise ImportProblem(f"blob {layer.digest} is corrupt (it hashes to {digest}, {size} bytes)")
            result = await self.store.link_or_copy(source, layer.digest)
        else:
            try:
                result = await self.store.ingest_file(source, expected=layer.digest)
            except BlobError as exc:
                raise ImportProblem(f"blob {layer.digest} is corrupt: {exc}") from None
        await self.catalog.record_blob(layer.digest, result.size, media_type=layer.media_type)

    async def _import_one(self, root: Path, relative: str, path: Path) -> AsyncIterator[dict[str, Any]]:
        host, namespace, model, tag = relative.split("/")
        try:
            name = ModelName.from_parts(host, namespace, model, tag)
        except InvalidNameError:
            raise ImportProblem("not a valid model name") from None
        try:
            raw = await asyncio.to_thread(_read_manifest, path)
            manifest = parse_manifest(raw)
        except (OSError, ManifestError) as exc:
            raise ImportProblem(str(exc)) from None
        for layer in manifest.all_layers:
            if await self.catalog.servable_size(layer.digest) == layer.size:
                continue
            progress = {"status": f"verifying {layer.digest.short}", "digest": str(layer.digest), "total": layer.size}
            yield {**progress, "completed": 0}
            await self._adopt(root / "blobs" / layer.digest.filename, layer)
            yield {**progress, "completed": layer.size}
        await self.catalog.put_manifest(name, raw)
        yield {"status": f"imported {name.display_shortest()}"}

    async def import_events(self, root: Path) -> AsyncIterator[dict[str, Any]]:
        if not (await asyncio.to_thread((root / "manifests").is_dir)
                and await asyncio.to_thread((root / "blobs").is_dir)):
            raise ApiError(400, f"{root} is not an ollama models folder (it needs manifests/ and blobs/)")
        found = await asyncio.to_thread(_scan, root)
        if not found:
            raise ApiError(400, f"no models found under {root / 'manifests'}")
        failed: list[str] = []
        for relative, path in found:
            try:
                async for event in self._import_one(root, relative, path):
                    yield event
            except ImportProblem as exc:
                failed.append(f"{relative}: {exc}")
                yield {"status": f"skipped {relative}: {exc}"}
        if failed:
            raise ApiError(400, f"{len(failed)} of {len(found)} models not imported: {'; '.join(failed)}")
        yield {"status": "success", "models": [relative for relative, _ in found]}

    async def import_folder(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request)
        path = field(body, "path", str)
        if not path or not Path(path).is_absolute():
            raise ApiError(400, "path must be the absolute path of an ollama models folder on the server")
        return await stream_progress(request, True, self.import_events(Path(path)))
