"""Manifests through the mirror: a byte-exact cache with tag re-checks, stale-if-error and offline.

A tag fetched from upstream is stored verbatim (its digest is the sha256 of those bytes) with the
time it was fetched. Within CORRAL_MANIFEST_TTL it is served from the catalogue; after that it is
fetched again. If upstream cannot answer (offline, DNS, timeout, 5xx) a cached copy of any age is
served and the fact logged; only a definitive upstream answer (404, the 412 version gate…)
overrides the cache. Tags created or pushed locally have no upstream and are never re-checked.
Pulls by digest never re-check: the digest pins the content.

The upstream's version gate is remembered per tag (`version_gate`): an ollama client older than
the upstream let have the cached manifest gets the upstream's own refusal from the cache, and one
whose version the upstream has not judged yet is asked about upstream even within the TTL.

Concurrent requests for one tag share one upstream fetch (eight clients asking for a cold model
cause one manifest GET), and catalogue writes are serialised so they never race each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

from registry.config import Settings
from registry.egress.gate import Offline
from registry.mirror.upstream import Endpoint, Refused, Unavailable, Upstream
from registry.mirror.version_gate import Verdict, VersionGates, client_version
from registry.model.manifest import ManifestError, ParsedManifest, parse_manifest
from registry.model.names import Digest, ModelName
from registry.storage.catalog import Catalog, ModelRecord

log = logging.getLogger("corral.manifests")


@dataclass(frozen=True)
class CachedManifest:
    raw: bytes
    digest: Digest
    media_type: str
    parsed: ParsedManifest
    upstream: str | None  # base URL it came from; None for local models
    fetched_at: float | None
    previous: Digest | None = None  # what the tag pointed at before this fetch moved it


class ManifestCache:
    def __init__(self, catalog: Catalog, upstream: Upstream, gates: VersionGates, settings: Settings) -> None:
        self.catalog = catalog
        self.upstream = upstream
        self.gates = gates
        self.settings = settings
        self._inflight: dict[tuple[str, str, str, bool], asyncio.Future[CachedManifest]] = {}
        self._writes = asyncio.Lock()

    def fresh(self, record: ModelRecord) -> bool:
        """Local tags are always fresh; upstream tags until CORRAL_MANIFEST_TTL has passed."""
        if record.upstream is None:
            return True
        return record.fetched_at is not None and time.time() - record.fetched_at < self.settings.manifest_ttl

    async def by_tag(
        self, name: ModelName, endpoint: Endpoint, user_agent: str, *, save: bool = True
    ) -> CachedManifest:
        """The manifest `name` designates. `save=False` leaves tagging to the caller (/api/pull
        tags a model only once its blobs are all present, as ollama writes the manifest last)."""
        key = (endpoint.base, name.key, user_agent, save)  # the UA is part of the question (version gate)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._resolve(name, endpoint, user_agent, save))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._settled(key, t))
        return await asyncio.shield(task)  # a client hanging up does not cancel the others' fetch

    def _settled(self, key: tuple[str, str, str, bool], task: asyncio.Future[CachedManifest]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody waited for is not logged as lost

    async def _resolve(self, name: ModelName, endpoint: Endpoint, user_agent: str, save: bool) -> CachedManifest:
        """The catalogue check and the refresh as one unit: whoever arrives after it finished sees
        the saved tag."""
        record = await self.catalog.get(name)
        version = client_version(user_agent)
        verdict = Verdict.SERVE
        if record is not None and record.upstream is not None and version is not None:
            gate = await self.gates.get(name)
            verdict = gate.verdict(version)
            if verdict is Verdict.REFUSE and gate.refusal is not None:
                raise gate.refusal.error()  # what the upstream answered this version, or an older one
        if record is not None and self.fresh(record) and verdict is Verdict.SERVE:
            return _from_record(record)
        try:
            # with a copy to fall back on, one try: a client should not wait out retries for a stale answer
            raw = await self.upstream.fetch_manifest(endpoint, name.repository, name.tag, user_agent,
                                                     attempts=1 if record is not None else None)
        except Refused as exc:
            if exc.status == 412 and version is not None:
                async with self._writes:
                    await self.gates.refused(name, version, exc)
            raise
        except Offline:
            if record is None:
                raise
            return _from_record(record)
        except Unavailable as exc:
            if record is None:
                raise
            log.warning("serving cached %s (fetched %.0fs ago): %s", name, time.time() - (record.fetched_at or 0), exc)
            return _from_record(record)
        parsed = _parse(raw, endpoint)
        digest = Digest(hashlib.sha256(raw).hexdigest())
        now = time.time()
        previous = record.manifest_digest if record is not None and record.manifest_digest != digest else None
        cached = CachedManifest(raw, digest, parsed.media_type, parsed, endpoint.base, now, previous)
        if version is not None:
            async with self._writes:
                await self.gates.passed(name, version, str(digest))
        if save:
            await self.tag(name, cached)
        return cached

    async def tag(self, name: ModelName, cached: CachedManifest) -> None:
        """Point `name` at `cached` (recording when it was fetched and from where)."""
        async with self._writes:
            await self.catalog.put_manifest(name, cached.raw, upstream=cached.upstream, fetched_at=cached.fetched_at)

    async def by_digest(self, name: ModelName, digest: Digest, endpoint: Endpoint, user_agent: str) -> CachedManifest:
        found = await self.catalog.get_manifest(digest)
        if found is not None:
            raw, media_type = found
            return CachedManifest(raw, digest, media_type, parse_manifest(raw), None, None)
        raw = await self.upstream.fetch_manifest(endpoint, name.repository, str(digest), user_agent)
        actual = Digest(hashlib.sha256(raw).hexdigest())
        if actual != digest:
            raise Unavailable(endpoint.base, f"manifest {digest} arrived with digest {actual}")
        parsed = _parse(raw, endpoint)
        async with self._writes:
            await self.catalog.save_manifest(raw)
        return CachedManifest(raw, digest, parsed.media_type, parsed, endpoint.base, time.time())


def _from_record(record: ModelRecord) -> CachedManifest:
    return CachedManifest(record.raw, record.manifest_digest, record.media_type, record.manifest,
                          record.upstream, record.fetched_at)


def _parse(raw: bytes, endpoint: Endpoint) -> ParsedManifest:
    try:
        return parse_manifest(raw)
    except ManifestError as exc:
        raise Unavailable(endpoint.base, f"upstream sent an unusable manifest: {exc}") from None
