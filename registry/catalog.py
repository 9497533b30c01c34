"""The model catalogue: names → manifests → blobs, on top of the database and the blob store.

Reference counts are never stored: a blob is referenced while some tagged manifest links it in
`manifest_layers`, so a crash can never leave a counter that drifts from the truth.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.db import BLOB_QUARANTINED, BLOB_VERIFIED, Blob, Manifest, ManifestLayer, Tag
from registry.manifest import ParsedManifest, parse_manifest
from registry.names import Digest, ModelName
from registry.store import BlobStore


class ModelNotFound(LookupError):
    def __init__(self, name: ModelName | str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


@dataclass(frozen=True)
class ModelRecord:
    """One tag with its manifest, as the API layers need it."""

    name: ModelName
    manifest_digest: Digest
    raw: bytes
    media_type: str
    manifest: ParsedManifest
    created_at: float
    modified_at: float
    fetched_at: float | None
    last_used: float | None
    pinned: bool
    upstream: str | None

    @property
    def size(self) -> int:
        return self.manifest.total_size


def manifest_digest(raw: bytes) -> Digest:
    return Digest(hashlib.sha256(raw).hexdigest())


class Catalog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], store: BlobStore) -> None:
        self.sessions = sessions
        self.store = store

    # ---- reads -------------------------------------------------------------------------------

    async def get(self, name: ModelName) -> ModelRecord | None:
        """Resolve a name case-insensitively, as ollama matches local models."""
        async with self.sessions() as s:
            row = (
                await s.execute(
                    select(Tag, Manifest).join(Manifest, Tag.manifest_digest == Manifest.digest)
                    .where(Tag.name_key == name.key)
                )
            ).first()
        return _record(*row) if row else None

    async def require(self, name: ModelName) -> ModelRecord:
        record = await self.get(name)
        if record is None:
            raise ModelNotFound(name.display_shortest())
        return record

    async def list_models(self) -> list[ModelRecord]:
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Tag, Manifest).join(Manifest, Tag.manifest_digest == Manifest.digest)
                    .order_by(Tag.modified_at.desc())
                )
            ).all()
        return [_record(t, m) for t, m in rows]

    async def get_manifest(self, digest: Digest) -> tuple[bytes, str] | None:
        async with self.sessions() as s:
            m = await s.get(Manifest, str(digest))
        return (m.raw, m.media_type) if m else None

    async def blob(self, digest: Digest) -> Blob | None:
        async with self.sessions() as s:
            return await s.get(Blob, str(digest))

    async def servable_size(self, digest: Digest) -> int | None:
        """Size of a verified blob present on disk, else None (unknown, partial or quarantined)."""
        row = await self.blob(digest)
        if row is None or row.state != BLOB_VERIFIED:
            return None
        return self.store.size(digest)

    async def layer_info(self, digest: Digest) -> tuple[int, str] | None:
        """Size and media type of a blob as some stored manifest declares it (blobs not yet fetched)."""
        async with self.sessions() as s:
            row = (
                await s.execute(
                    select(ManifestLayer.size, ManifestLayer.media_type)
                    .where(ManifestLayer.blob_digest == str(digest)).limit(1)
                )
            ).first()
        return (row[0], row[1]) if row else None

    # ---- writes ------------------------------------------------------------------------------

    async def record_blob(
        self, digest: Digest, size: int, *, media_type: str | None = None, state: str = BLOB_VERIFIED
    ) -> None:
        now = time.time()
        async with self.sessions.begin() as s:
            row = await s.get(Blob, str(digest))
            if row is None:
                s.add(Blob(digest=str(digest), size=size, media_type=media_type, state=state,
                           created_at=now, last_access=now))
            else:
                row.size, row.state, row.last_access = size, state, now
                row.media_type = row.media_type or media_type

    async def quarantine_blob(self, digest: Digest) -> None:
        """Take a blob out of service; the file is moved aside so nothing can serve it."""
        self.store.quarantine(digest)
        async with self.sessions.begin() as s:
            await s.execute(update(Blob).where(Blob.digest == str(digest)).values(state=BLOB_QUARANTINED))

    async def save_manifest(self, raw: bytes) -> tuple[Digest, ParsedManifest]:
        """Store manifest bytes and their layer links without naming them (pull by digest)."""
        parsed = parse_manifest(raw)
        digest = manifest_digest(raw)
        async with self.sessions.begin() as s:
            await self._upsert_manifest(s, digest, raw, parsed)
        return digest, parsed

    async def put_manifest(
        self,
        name: ModelName,
        raw: bytes,
        *,
        upstream: str | None = None,
        fetched_at: float | None = None,
    ) -> Digest:
        """Store manifest bytes verbatim and point `name` at them (creating or moving the tag)."""
        parsed = parse_manifest(raw)
        digest = manifest_digest(raw)
        now = time.time()
        async with self.sessions.begin() as s:
            await self._upsert_manifest(s, digest, raw, parsed)
            tag = (await s.execute(select(Tag).where(Tag.name_key == name.key))).scalar_one_or_none()
            if tag is None:
                s.add(Tag(name_key=name.key, host=name.host, namespace=name.namespace, model=name.model,
                          tag=name.tag, manifest_digest=str(digest), created_at=now, modified_at=now,
                          fetched_at=fetched_at, last_used=None, pinned=False, upstream=upstream))
            else:
                if tag.manifest_digest != str(digest):
                    tag.manifest_digest = str(digest)
                    tag.modified_at = now
                tag.fetched_at = fetched_at if fetched_at is not None else tag.fetched_at
                tag.upstream = upstream or tag.upstream
        return digest

    async def _upsert_manifest(self, s: AsyncSession, digest: Digest, raw: bytes, parsed: ParsedManifest) -> None:
        if await s.get(Manifest, str(digest)) is not None:
            return
        s.add(Manifest(digest=str(digest), media_type=parsed.media_type, raw=raw, created_at=time.time()))
        await s.flush()
        for i, layer in enumerate(parsed.all_layers):
            s.add(ManifestLayer(manifest_digest=str(digest), position=i, blob_digest=str(layer.digest),
                                media_type=layer.media_type, size=layer.size))

    async def mark_fetched(self, name: ModelName, when: float) -> None:
        async with self.sessions.begin() as s:
            await s.execute(update(Tag).where(Tag.name_key == name.key).values(fetched_at=when))

    async def touch(self, name: ModelName) -> None:
        """Record a use (pull or run): the LRU order pruning evicts by."""
        async with self.sessions.begin() as s:
            await s.execute(update(Tag).where(Tag.name_key == name.key).values(last_used=time.time()))

    async def set_pinned(self, name: ModelName, pinned: bool) -> None:
        async with self.sessions.begin() as s:
            result = await s.execute(update(Tag).where(Tag.name_key == name.key).values(pinned=pinned))
            if result.rowcount == 0:
                raise ModelNotFound(name.display_shortest())

    async def copy(self, source: ModelName, destination: ModelName) -> None:
        record = await self.require(source)
        await self.put_manifest(destination, record.raw, upstream=record.upstream, fetched_at=record.fetched_at)

    async def delete(self, name: ModelName) -> list[Digest]:
        """Remove a tag; then delete the blobs no remaining tag references. Returns those blobs."""
        async with self.sessions.begin() as s:
            tag = (await s.execute(select(Tag).where(Tag.name_key == name.key))).scalar_one_or_none()
            if tag is None:
                raise ModelNotFound(name.display_shortest())
            await s.delete(tag)
        return await self.collect_garbage()

    async def collect_garbage(self, protected: Sequence[Digest] = ()) -> list[Digest]:
        """Drop untagged manifests and unreferenced blobs (rows first, then files).

        Deleting the row before the file means a crash in between leaves an orphan file, which the
        startup reconciliation removes; the opposite order could list a blob that is gone.
        """
        keep = {str(d) for d in protected}
        async with self.sessions.begin() as s:
            tagged = select(Tag.manifest_digest)
            await s.execute(delete(Manifest).where(Manifest.digest.not_in(tagged)))
            await s.execute(delete(ManifestLayer).where(ManifestLayer.manifest_digest.not_in(
                select(Manifest.digest))))
            referenced = select(ManifestLayer.blob_digest)
            rows = (await s.execute(select(Blob.digest).where(Blob.digest.not_in(referenced)))).scalars().all()
            doomed = [d for d in rows if d not in keep]
            if doomed:
                await s.execute(delete(Blob).where(Blob.digest.in_(doomed)))
        digests = [Digest.parse(d) for d in doomed]
        for d in digests:
            self.store.delete(d)
        return digests

    async def reference_count(self, digest: Digest) -> int:
        """How many tags reference `digest` through their manifests."""
        async with self.sessions() as s:
            return (
                await s.execute(
                    select(func.count()).select_from(Tag)
                    .join(ManifestLayer, ManifestLayer.manifest_digest == Tag.manifest_digest)
                    .where(ManifestLayer.blob_digest == str(digest))
                )
            ).scalar_one()


def _record(tag: Tag, manifest: Manifest) -> ModelRecord:
    return ModelRecord(
        name=ModelName(tag.host, tag.namespace, tag.model, tag.tag),
        manifest_digest=Digest.parse(manifest.digest),
        raw=manifest.raw,
        media_type=manifest.media_type,
        manifest=parse_manifest(manifest.raw),
        created_at=tag.created_at,
        modified_at=tag.modified_at,
        fetched_at=tag.fetched_at,
        last_used=tag.last_used,
        pinned=tag.pinned,
        upstream=tag.upstream,
    )
