"""Bundles: models carried across an air gap as one tar file.

Export (`POST /api/corral/export`) streams `corral-bundle.json` (the index), an optional
`corral-bundle.sig`, the manifests and the blobs straight from the store — the size is known
up front, nothing is loaded into memory, and `exclude` (the digests of an earlier bundle's index)
leaves out blobs the other side already has.

Import (`POST /api/corral/import`) reads the same stream and trusts nothing: the first entry must
be the index; a signature, when present (or required by CORRAL_REQUIRE_SIGNED), must verify
against authorized_keys; every later entry must be listed in the index, be a regular file, have
the listed size and hash to the listed digest. Blobs are written to a staging directory (blobs we
already hold are only hashed) and published, with the tags, only after the end of the archive
was reached with every listed entry verified. So a truncated or tampered bundle imports nothing,
and the error names the entry that failed.

`Bundles` serves both routes with what they use: the catalogue and store, the leases that keep
exported blobs from being pruned mid-archive, corral's key (to sign), authorized_keys and
CORRAL_REQUIRE_SIGNED (to check a signature) and the scratch directory imports are staged in.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from registry.airgap.bundle_index import (
    INDEX_NAME,
    SIGNATURE_NAME,
    BlobItem,
    BundleError,
    BundleIndex,
    ManifestItem,
)
from registry.airgap.tarstream import (
    END,
    Entry,
    TarFormatError,
    TarReader,
    entry_size,
    header,
    padding,
    stream_reader_source,
)
from registry.auth.access import AuthorizedKeys
from registry.auth.keys import SignatureError, load_or_create_key, sign_challenge, verify_challenge
from registry.model.manifest import ManifestError, parse_manifest
from registry.model.names import Digest, InvalidDigestError, InvalidNameError, ModelName
from registry.storage.catalog import Catalog, ModelNotFound
from registry.storage.leases import Leases
from registry.storage.store import BlobError, BlobStore
from registry.web.errors import ApiError
from registry.web.jsonbody import field, read_json_object
from registry.web.ndjson import stream_progress

MAX_INDEX = 16 * 1024 * 1024
MAX_MANIFEST = 4 * 1024 * 1024
MAX_SIGNATURE = 4096
READ_CHUNK = 1024 * 1024


# ---- export ----------------------------------------------------------------------------------

def bundle_size(index_raw: bytes, signature: bytes | None, index: BundleIndex) -> int:
    size = entry_size(len(index_raw)) + (entry_size(len(signature)) if signature else 0)
    return size + sum(entry_size(item.size) for item in index.entries.values()) + len(END)


async def bundle_chunks(store: BlobStore, index: BundleIndex, index_raw: bytes, signature: bytes | None,
                        manifests: dict[Digest, bytes]) -> AsyncIterator[bytes]:
    now = time.time()
    yield header(INDEX_NAME, len(index_raw), now) + index_raw + b"\0" * padding(len(index_raw))
    if signature:
        yield header(SIGNATURE_NAME, len(signature), now) + signature + b"\0" * padding(len(signature))
    for name, item in index.entries.items():
        yield header(name, item.size, now)
        if isinstance(item, ManifestItem):
            yield manifests[item.digest]
        else:
            async for chunk in _read_blob(store.path(item.digest), item.size):
                yield chunk
        yield b"\0" * padding(item.size)
    yield END


async def _read_blob(path: Path, size: int) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        remaining = size
        while remaining:
            chunk = await asyncio.to_thread(f.read, min(READ_CHUNK, remaining))
            if not chunk:
                raise OSError(f"{path} is shorter than its recorded size")
            remaining -= len(chunk)
            yield chunk
    finally:
        f.close()


def _names(body: dict[str, Any]) -> list[ModelName]:
    texts = field(body, "models", list, [])
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "models must be a non-empty list of model names")
    try:
        return [ModelName.parse(t) for t in texts]
    except InvalidNameError:
        raise ApiError(400, "invalid model name") from None


# ---- import ----------------------------------------------------------------------------------

async def _verify_only(chunks: AsyncIterator[bytes], item: BlobItem) -> None:
    """Hash an entry we already hold, so a tampered copy is still noticed, without storing it."""
    h = hashlib.sha256()
    async for chunk in chunks:
        await asyncio.to_thread(h.update, chunk)
    if Digest(h.hexdigest()) != item.digest:
        raise BundleError(f"entry {item.entry_name}: digest mismatch, got sha256:{h.hexdigest()}")


async def _manifest_entry(reader: TarReader, entry: Entry, item: ManifestItem, index: BundleIndex) -> bytes:
    raw = await reader.read_all(entry, MAX_MANIFEST)
    if Digest(hashlib.sha256(raw).hexdigest()) != item.digest:
        raise BundleError(f"entry {entry.name}: digest mismatch")
    try:
        parsed = parse_manifest(raw)
    except ManifestError as exc:
        raise BundleError(f"entry {entry.name}: {exc}") from None
    listed = {b.digest: b.size for b in index.blobs}
    for layer in parsed.all_layers:
        if listed.get(layer.digest) != layer.size:
            raise BundleError(f"entry {entry.name}: layer {layer.digest} is not listed in the index")
    return raw


async def _as_api_errors(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        async for event in events:
            yield event
    except (BundleError, TarFormatError) as exc:
        raise ApiError(400, f"bundle refused, nothing imported: {exc}") from None


class Bundles:
    """Export and import of one server's models as bundles."""

    def __init__(self, catalog: Catalog, store: BlobStore, leases: Leases, key_path: Path,
                 authorized_keys_path: Path, require_signed: bool, scratch_dir: Path) -> None:
        self.catalog = catalog
        self.store = store
        self.leases = leases
        self.key_path = key_path
        self.authorized_keys_path = authorized_keys_path
        self.require_signed = require_signed
        self.scratch_dir = scratch_dir

    async def plan_export(self, names: list[ModelName],
                          exclude: set[Digest]) -> tuple[BundleIndex, dict[Digest, bytes]]:
        """The index for `names` and their manifest bytes; 404 for an unknown model."""
        models, manifests, raws, blobs = [], {}, {}, {}
        for name in names:
            try:
                record = await self.catalog.require(name)
            except ModelNotFound:
                raise ApiError(404, f"model '{name.display_shortest()}' not found") from None
            models.append((record.name, record.manifest_digest))
            manifests[record.manifest_digest] = ManifestItem(record.manifest_digest, len(record.raw), record.media_type)
            raws[record.manifest_digest] = record.raw
            for layer in record.manifest.all_layers:
                included = layer.digest not in exclude
                if included and await self.catalog.servable_size(layer.digest) != layer.size:
                    raise ApiError(409, f"blob {layer.digest} of {name.display_shortest()} is not in the store")
                blobs.setdefault(layer.digest, BlobItem(layer.digest, layer.size, layer.media_type, included))
        index = BundleIndex(tuple(models), tuple(manifests.values()), tuple(blobs.values()), created=time.time())
        return index, raws

    async def export(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request)
        try:
            exclude = {Digest.parse(d) for d in field(body, "exclude", list, [])}
        except InvalidDigestError as exc:
            raise ApiError(400, f"exclude: {exc}") from None
        index, manifests = await self.plan_export(_names(body), exclude)
        # leased from the plan on (no await in between, signing included): a prune meanwhile keeps
        # these blobs, or defers removing their files until the archive has them
        with self.leases.hold(*(item.digest for item in index.blobs if item.included)):
            index_raw = index.to_json()
            signature = None
            if field(body, "sign", bool, False):
                key = await asyncio.to_thread(load_or_create_key, self.key_path)
                signature = sign_challenge(key, index_raw).encode()
            response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
            response.content_length = bundle_size(index_raw, signature, index)
            await response.prepare(request)
            async for chunk in bundle_chunks(self.store, index, index_raw, signature, manifests):
                await response.write(chunk)
            await response.write_eof()
        return response

    async def _read_header(self, reader: TarReader) -> tuple[BundleIndex, str | None, Entry | None]:
        """Index, signer (authorized_keys line) and the first data entry."""
        entry = await reader.next()
        if entry is None or entry.name != INDEX_NAME:
            raise BundleError(f"the first entry must be {INDEX_NAME}, got {entry.name if entry else 'nothing'}")
        index_raw = await reader.read_all(entry, MAX_INDEX)
        index = BundleIndex.parse(index_raw)
        entry = await reader.next()
        signer = None
        if entry is not None and entry.name == SIGNATURE_NAME:
            signature = (await reader.read_all(entry, MAX_SIGNATURE)).decode("ascii", "replace")
            try:
                blob = verify_challenge(signature, index_raw)
            except SignatureError as exc:
                raise BundleError(f"entry {SIGNATURE_NAME}: {exc}") from None
            signer = await asyncio.to_thread(AuthorizedKeys(self.authorized_keys_path).lookup, blob)
            if signer is None:
                raise BundleError(f"entry {SIGNATURE_NAME}: the signing key is not in authorized_keys")
            entry = await reader.next()
        elif self.require_signed:
            raise BundleError("bundle is not signed and CORRAL_REQUIRE_SIGNED is set")
        return index, signer, entry

    async def import_events(self, reader: TarReader) -> AsyncIterator[dict[str, Any]]:
        index, signer, entry = await self._read_header(reader)
        present = {b.digest for b in index.blobs if await self.catalog.servable_size(b.digest) == b.size}
        for blob in index.blobs:
            if not blob.included and blob.digest not in present:
                raise BundleError(f"blob {blob.digest} was left out of this bundle (--since) and is not here")
        yield {"status": f"bundle of {len(index.models)} model(s) from corral {index.corral or '?'}, "
                         + (f"signed by {signer}" if signer else "unsigned")}
        expected = index.entries
        staging = BlobStore(self.scratch_dir / f"import-{secrets.token_hex(8)}")
        manifests: dict[Digest, bytes] = {}
        try:
            while entry is not None:
                item = expected.pop(entry.name, None)
                if item is None:
                    raise BundleError(f"entry {entry.name!r} is not listed in the bundle index (or appears twice)")
                if entry.size != item.size:
                    raise BundleError(f"entry {entry.name}: {entry.size} bytes, the index says {item.size}")
                if isinstance(item, ManifestItem):
                    manifests[item.digest] = await _manifest_entry(reader, entry, item, index)
                else:
                    yield {"status": f"verifying {item.digest.short}", "digest": str(item.digest),
                           "total": item.size, "completed": 0}
                    chunks = reader.chunks(entry)
                    if item.digest in present:
                        await _verify_only(chunks, item)
                    else:
                        try:
                            await staging.ingest(chunks, expected=item.digest, expected_size=item.size)
                        except BlobError as exc:
                            raise BundleError(f"entry {entry.name}: {exc}") from None
                    yield {"status": f"verifying {item.digest.short}", "digest": str(item.digest),
                           "total": item.size, "completed": item.size}
                entry = await reader.next()
            if expected:
                raise BundleError(f"bundle ended before entry {next(iter(expected))}")
            yield {"status": "writing manifests"}
            for item in index.blobs:
                if item.included and item.digest not in present:
                    result = await self.store.link_or_copy(staging.path(item.digest), item.digest)
                    await self.catalog.record_blob(item.digest, result.size, media_type=item.media_type)
            for name, digest in index.models:
                await self.catalog.put_manifest(name, manifests[digest])
        finally:
            await asyncio.to_thread(shutil.rmtree, staging.root, True)
        added = sum(1 for b in index.blobs if b.included and b.digest not in present)
        yield {"status": "success", "models": [n.display_shortest() for n, _ in index.models],
               "blobs_added": added, "blobs_skipped": len(index.blobs) - added}

    async def import_bundle(self, request: web.Request) -> web.StreamResponse:
        reader = TarReader(stream_reader_source(request.content))
        return await stream_progress(request, True, _as_api_errors(self.import_events(reader)))
