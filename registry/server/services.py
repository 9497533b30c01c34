"""The parts one running server is made of, built once from the settings by `build_services`.

Only the composition root (this package) sees the whole set: it hands each handler object the
few parts it uses. The set is also kept on the application under `SERVICES`, for the shutdown
hook and for tests that look inside a running server; no feature module reads it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from registry.auth.access import Grants
from registry.auth.keys import load_or_create_key
from registry.auth.presigned import PresignedBlobs
from registry.auth.shared_grants import SharedGrants
from registry.cache.counters import CacheCounters
from registry.cache.history import History
from registry.cache.lifecycle import Lifecycle
from registry.cache.prune import Pruner
from registry.cache.scrub import Scrubber
from registry.config import Settings
from registry.egress.gate import Egress, environment_proxies
from registry.mirror.content import LocalContent
from registry.mirror.fills import FLUSH_INTERVAL, Fills, InFlight
from registry.mirror.keepwarm import KeepWarm
from registry.mirror.manifest_cache import ManifestCache
from registry.mirror.proxy import ProxyContent
from registry.mirror.pull import Puller
from registry.mirror.responses import BlobMeter
from registry.mirror.upstream import Upstream
from registry.mirror.version_gate import VersionGates
from registry.server.runner_bridge import make_runner
from registry.storage.catalog import Catalog
from registry.storage.cluster_leases import ClusterLeases
from registry.storage.cluster_uploads import ClusterUploadStore
from registry.storage.contents import ModelReader
from registry.storage.db import make_engine, make_sessionmaker
from registry.storage.duty import DutyLock
from registry.storage.fill_claims import FillClaims
from registry.storage.leases import Leases
from registry.storage.nodes import NodeRecord
from registry.storage.owner import STALE_HEARTBEATS
from registry.storage.ownership import Ownership
from registry.storage.reconcile import CLUSTER_GRACE
from registry.storage.store import BlobStore
from registry.storage.uploads import UploadStore
from runner.http.ollama import Runner

log = logging.getLogger("corral")


@dataclass(frozen=True)
class Services:
    settings: Settings
    ownership: Ownership  # the models folder's lock and the catalogue's owner row (or node row), released last
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: BlobStore
    leases: Leases  # blobs being read right now: never pruned, files removed after the last reader
    catalog: Catalog
    model_reader: ModelReader
    uploads: UploadStore
    egress: Egress  # the one check every outbound connection passes (offline, allowed hosts, addresses)
    upstream: Upstream  # the mirror's client of upstream registries, through the gate
    presigned: PresignedBlobs  # blob URLs readable without a token, keyed by corral's key
    grants: Grants  # registry tokens issued and nonces used: in memory, or in the catalogue in a cluster
    manifests: ManifestCache
    in_flight: InFlight
    fills: Fills
    counters: CacheCounters
    blob_meter: BlobMeter
    local: LocalContent
    content: ProxyContent
    puller: Puller
    runner: Runner
    lifecycle: Lifecycle


async def build_services(settings: Settings) -> Services:
    """Take the store (folder lock, catalogue claim, migrations), clear leftovers of interrupted
    ingests, then build every part.

    Taking the store comes first, so a server refused because another one holds it has changed
    nothing. Apart from the ownership heartbeat, nothing here serves requests or starts background
    work: that begins with the application (`Lifecycle.start`), after reconciliation.
    """
    if settings.cluster:
        me = await asyncio.to_thread(NodeRecord.for_this_process, settings.node, settings.models,
                                     settings.advertised_url)
        ownership = await Ownership.join(settings.models, settings.database_url, me,
                                         heartbeat=settings.owner_heartbeat)
    else:
        ownership = await Ownership.take(settings.models, settings.database_url, settings.host.url,
                                         heartbeat=settings.owner_heartbeat,
                                         default_database=settings.default_database)
    try:
        return await _build(settings, ownership)
    except BaseException:
        await ownership.release()
        raise


async def _build(settings: Settings, ownership: Ownership) -> Services:
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    store = BlobStore(settings.blobs_dir)
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    # in a cluster, another node's ingest may be writing its temporary file right now
    for stray in store.stray_temp_files(time.time() - CLUSTER_GRACE if settings.cluster else None):
        stray.unlink(missing_ok=True)
        log.info("removed leftover of an interrupted ingest: %s", stray.name)
    leases = ClusterLeases(sessions, ownership.node.id) if ownership.node is not None else Leases()
    catalog = Catalog(sessions, store, leases)
    model_reader = ModelReader(store)
    key = await asyncio.to_thread(load_or_create_key, settings.key_path)
    egress = Egress(settings, environment_proxies())
    upstream = Upstream(settings, key, egress)
    manifests = ManifestCache(catalog, upstream, VersionGates(sessions), settings)
    counters = CacheCounters(settings.max_cache)
    runner = make_runner(settings, catalog, model_reader)
    in_flight = InFlight()
    pruner = Pruner(settings, catalog, in_flight, runner.loaded_paths, counters)
    fills = Fills(store, catalog, _fill_claims(settings, sessions, ownership), upstream, in_flight, pruner.run_to_end)
    puller = Puller(upstream, manifests, fills, catalog, noprune=settings.noprune)
    local = LocalContent(catalog, counters.served_hit)
    lifecycle = Lifecycle(
        settings, catalog, pruner, Scrubber(catalog, sessions, leases, counters),
        KeepWarm(puller, upstream, settings.sync), History(counters, upstream.rate),
        DutyLock(engine) if settings.cluster else None,
    )
    return Services(
        settings=settings,
        ownership=ownership,
        engine=engine,
        sessions=sessions,
        store=store,
        leases=leases,
        catalog=catalog,
        model_reader=model_reader,
        uploads=_upload_store(settings, sessions, ownership),
        egress=egress,
        upstream=upstream,
        presigned=PresignedBlobs.from_key(key),
        grants=SharedGrants(sessions) if ownership.node is not None else Grants(),
        manifests=manifests,
        in_flight=in_flight,
        fills=fills,
        counters=counters,
        blob_meter=BlobMeter(counters.served_miss),
        local=local,
        content=ProxyContent(local, manifests, fills, upstream),
        puller=puller,
        runner=runner,
        lifecycle=lifecycle,
    )


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def _fill_claims(settings: Settings, sessions: async_sessionmaker[AsyncSession], ownership: Ownership) -> FillClaims:
    """A node of a cluster fetches a blob only when no other live node does; one counts as gone
    when it missed as many heartbeats (its own, or its fill's checkpoint ticks) as a node does."""
    if ownership.node is None:
        return FillClaims(sessions)
    return FillClaims(sessions, ownership.node.id, STALE_HEARTBEATS * max(FLUSH_INTERVAL, settings.owner_heartbeat))


def _upload_store(settings: Settings, sessions: async_sessionmaker[AsyncSession], ownership: Ownership) -> UploadStore:
    """A single server keeps push sessions in its scratch folder; a node of a cluster in the shared
    models folder, with their state in the catalogue, so any node continues them."""
    if ownership.node is None:
        return UploadStore(settings.scratch_dir / "uploads", settings.max_upload, settings.upload_timeout)
    return ClusterUploadStore(settings.models / "tmp" / "uploads", settings.max_upload, settings.upload_timeout,
                              sessions, ownership.node.id)
