"""The model catalogue: names → manifests → blobs, on top of the database and the blob store.

Reference counts are never stored: a blob is referenced while some tagged manifest links it in
`manifest_layers`, so a crash can never leave a counter that drifts from the truth.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.model.manifest import ParsedManifest, parse_manifest
from registry.model.names import Digest, ModelName
from registry.storage.db import BLOB_QUARANTINED, BLOB_VERIFIED, Blob, Manifest, ManifestLayer, Tag, dialect_insert
from registry.storage.leases import Leases, discard, inode_of
from registry.storage.store import BlobStore


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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], store: BlobStore, leases: Leases) -> None:
        self.sessions = sessions
        self.store = store
        self.leases = leases

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

    async def repositories(self, host: str) -> list[tuple[str, str]]:
        """(namespace, model) of every repository with a tag under `host`, once each (names
        compare case-insensitively, as ollama's do), spelled as first stored."""
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Tag.namespace, Tag.model).where(Tag.name_key.startswith(f"{host.lower()}/", autoescape=True))
                    .order_by(Tag.id)
                )
            ).all()
        found: dict[str, tuple[str, str]] = {}
        for namespace, model in rows:
            found.setdefault(f"{namespace}/{model}".lower(), (namespace, model))
        return list(found.values())

    async def tags_of(self, name: ModelName) -> list[str]:
        """The tags of `name`'s repository (its host, namespace and model; its own tag aside)."""
        repository = name.key.rsplit(":", 1)[0]
        async with self.sessions() as s:
            rows = await s.execute(select(Tag.tag).where(Tag.name_key.startswith(f"{repository}:", autoescape=True)))
            return list(rows.scalars())

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

    async def pulled_layer(self, name: ModelName, digest: Digest) -> tuple[int, str] | None:
        """Size and media type of `digest` as a manifest pulled for `name`'s repository declares it.

        Pulled means cached from an upstream: tagged under that repository with an upstream
        recorded, or stored without a tag, which is how a pull by digest keeps its manifest (a
        push by digest is stored so too, but only once all its blobs are here). None when no
        such manifest names the digest: created, pushed and other repositories' models do not count.
        """
        repository = f"{name.host}/{name.namespace}/{name.model}".lower()
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(ManifestLayer.size, ManifestLayer.media_type, Tag.host, Tag.namespace, Tag.model,
                           Tag.upstream)
                    .outerjoin(Tag, Tag.manifest_digest == ManifestLayer.manifest_digest)
                    .where(ManifestLayer.blob_digest == str(digest))
                )
            ).all()
        for size, media_type, host, namespace, model, upstream in rows:
            untagged = host is None
            if untagged or (upstream is not None and f"{host}/{namespace}/{model}".lower() == repository):
                return size, media_type
        return None

    # ---- writes ------------------------------------------------------------------------------

    async def record_blob(
        self, digest: Digest, size: int, *, media_type: str | None = None, state: str = BLOB_VERIFIED
    ) -> None:
        """Insert or update the blob's row in one statement: servers sharing a catalogue may record
        the same blob at the same moment (a media type already known is kept)."""
        now = time.time()
        async with self.sessions.begin() as s:
            row = dialect_insert(s, Blob).values(digest=str(digest), size=size, media_type=media_type, state=state,
                                                 created_at=now, last_access=now)
            await s.execute(row.on_conflict_do_update(index_elements=[Blob.digest], set_={
                "size": row.excluded.size, "state": row.excluded.state, "last_access": row.excluded.last_access,
                "media_type": func.coalesce(func.nullif(Blob.media_type, ""), row.excluded.media_type),
            }))

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
            tag = dialect_insert(s, Tag).values(
                name_key=name.key, host=name.host, namespace=name.namespace, model=name.model, tag=name.tag,
                manifest_digest=str(digest), created_at=now, modified_at=now, fetched_at=fetched_at,
                last_used=None, pinned=False, upstream=upstream)
            new = tag.excluded
            await s.execute(tag.on_conflict_do_update(index_elements=[Tag.name_key], set_={
                "manifest_digest": new.manifest_digest,
                "modified_at": case((Tag.manifest_digest != new.manifest_digest, new.modified_at),
                                    else_=Tag.modified_at),
                "fetched_at": func.coalesce(new.fetched_at, Tag.fetched_at),
                "upstream": func.coalesce(func.nullif(new.upstream, ""), Tag.upstream),
            }))
        return digest

    async def _upsert_manifest(self, s: AsyncSession, digest: Digest, raw: bytes, parsed: ParsedManifest) -> None:
        """Store the manifest and its layer links unless they are there already (stored by this
        server earlier, or by another one sharing the catalogue a moment ago)."""
        stored = await s.execute(
            dialect_insert(s, Manifest)
            .values(digest=str(digest), media_type=parsed.media_type, raw=raw, created_at=time.time())
            .on_conflict_do_nothing(index_elements=[Manifest.digest])
        )
        if stored.rowcount == 0 or not parsed.all_layers:
            return
        await s.execute(insert(ManifestLayer), [
            {"manifest_digest": str(digest), "position": i, "blob_digest": str(layer.digest),
             "media_type": layer.media_type, "size": layer.size}
            for i, layer in enumerate(parsed.all_layers)
        ])

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
        """Remove a tag, then the blobs of its manifest that nothing references any more."""
        async with self.sessions.begin() as s:
            tag = (await s.execute(select(Tag).where(Tag.name_key == name.key))).scalar_one_or_none()
            if tag is None:
                raise ModelNotFound(name.display_shortest())
            manifest = tag.manifest_digest
            await s.delete(tag)
        return await self.collect_garbage([Digest.parse(manifest)])

    async def collect_garbage(self, manifests: Sequence[Digest], protected: Sequence[Digest] = ()) -> list[Digest]:
        """Drop `manifests` if no tag points at them any more, then their blobs nothing references.

        The sweep is scoped to the manifests a delete or a re-pull just released: a global sweep
        would race a pull whose manifest is stored but not yet tagged, or a blob uploaded for a
        create that has not happened yet (the pruner collects true orphans after a grace period).
        Rows go first, then files: a crash in between leaves an orphan file that the startup
        reconciliation removes, never a row listing a blob that is gone. Blobs being read are
        skipped here and their files retired through the leases, so a reader always finishes.
        """
        keep = {str(d) for d in protected} | {str(d) for d in self.leases.held()}
        released = [str(d) for d in manifests]
        async with self.sessions() as s:
            layers = select(ManifestLayer.blob_digest).where(ManifestLayer.manifest_digest.in_(released))
            # Inodes taken before the rows go: a copy fetched again afterwards is never the one removed.
            inodes = {d: await asyncio.to_thread(inode_of, self.store.path(Digest.parse(d)))
                      for d in set((await s.execute(layers)).scalars())}
        async with self.sessions.begin() as s:
            untagged = select(Manifest.digest).where(
                Manifest.digest.in_(released), Manifest.digest.not_in(select(Tag.manifest_digest))
            )
            gone = list((await s.execute(untagged)).scalars())
            if not gone:
                return []
            layer_blobs = select(ManifestLayer.blob_digest).where(ManifestLayer.manifest_digest.in_(gone))
            candidates = set((await s.execute(layer_blobs)).scalars()) - keep
            # locked before the other nodes' leases are read (see storage.cluster_leases)
            await s.execute(select(Blob.digest).where(Blob.digest.in_(candidates)).with_for_update())
            candidates -= await self.leases.held_elsewhere(s)
            await s.execute(delete(ManifestLayer).where(ManifestLayer.manifest_digest.in_(gone)))
            await s.execute(delete(Manifest).where(Manifest.digest.in_(gone)))
            still_used = select(ManifestLayer.blob_digest).where(ManifestLayer.blob_digest.in_(candidates))
            doomed = sorted(candidates - set((await s.execute(still_used)).scalars()))
            if doomed:
                await s.execute(delete(Blob).where(Blob.digest.in_(doomed)))
        digests = [Digest.parse(d) for d in doomed]
        for d in digests:
            await self.remove_file(d, inodes.get(str(d)))
        return digests

    async def remove_file(self, digest: Digest, inode: int | None) -> None:
        """Take the blob file with `inode` out of the store; deferred until its last reader is done."""
        if inode is None:
            return
        aside = self.leases.retire(digest, self.store.path(digest), inode)
        if aside is not None:
            await asyncio.to_thread(discard, aside)

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
