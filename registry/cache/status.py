"""What the cache holds and how it is doing: the JSON of GET /api/corral/status, which /corral renders.

Everything shown on the status page comes from one `CacheStatus.collect` call (`cache.page`
renders it), so the page and the JSON never disagree. Each number is read from the part that
owns it: the pruner's measurement, the disk, the catalogue, the fills in flight, the upstream's
health, the traffic history, the runner (through a callable, since the cache does not know
the runner), and in cluster mode the nodes sharing the catalogue.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select

from registry import __version__
from registry.cache.counters import CacheCounters
from registry.cache.lifecycle import Lifecycle
from registry.cache.prune import TagInfo, in_use
from registry.config import Settings
from registry.mirror.fills import Fill, InFlight
from registry.mirror.health import Contact, UpstreamHealth
from registry.mirror.upstream import Endpoint
from registry.model.names import DEFAULT_NAMESPACE, Digest
from registry.storage.catalog import Catalog
from registry.storage.db import BLOB_QUARANTINED, Blob, Node
from registry.storage.nodes import NodeRecord

RunnerStatus = Callable[[], dict[str, Any]]
"""The runner's loaded models (name, size, processor, expires_at) and its queue depth."""


class CacheStatus:
    """Gathers the status from the parts that own each number; see the module docstring."""

    def __init__(self, settings: Settings, lifecycle: Lifecycle, catalog: Catalog, in_flight: InFlight,
                 readers: Counter[Digest], counters: CacheCounters, health: UpstreamHealth,
                 runner: RunnerStatus, node: NodeRecord | None = None) -> None:
        self.settings = settings
        self.node = node  # this server, in cluster mode
        self.lifecycle = lifecycle
        self.catalog = catalog
        self.in_flight = in_flight
        self.readers = readers  # open /v2 blob GETs per digest
        self.counters = counters
        self.health = health
        self.runner = runner

    async def collect(self) -> dict[str, Any]:
        lc, settings, counters, catalog = self.lifecycle, self.settings, self.counters, self.catalog
        usage = await lc.pruner.measure()
        disk = await asyncio.to_thread(shutil.disk_usage, catalog.store.root)
        async with catalog.sessions() as s:
            quarantined = (await s.execute(select(func.count()).select_from(Blob)
                                           .where(Blob.state == BLOB_QUARANTINED))).scalar_one()
        totals = lc.history.read()
        served = totals.hit_bytes + totals.miss_bytes
        return {
            "version": __version__,
            "cache": {"used": usage.total, "stored": usage.stored, "filling": usage.filling,
                      "quota": settings.max_cache, "high_watermark": settings.high_watermark,
                      "low_watermark": settings.low_watermark},
            "disk": {"total": disk.total, "used": disk.used, "free": disk.free},
            "hits": {"requests": dict(counters.requests), "bytes": dict(counters.bytes), "ratio": counters.hit_ratio()},
            "traffic": {
                "served_from_cache": totals.hit_bytes,
                "served_while_filling": totals.miss_bytes,
                "fetched_upstream": totals.upstream_bytes,
                "saved": max(served - totals.upstream_bytes, 0),
                "hit_ratio_by_bytes": totals.hit_bytes / served if served else None,
            },
            "history": {"interval": lc.history.interval, "span": lc.history.span,
                        "points": [asdict(p) for p in lc.history.points()]},
            "upstream": self._upstream(),
            "runner": self.runner(),
            "models": await self._models(),
            "fills": [self._fill(fill) for fill in self._fills()],
            "quarantined": quarantined,
            "prune": lc.pruner.last_run,
            "scrub": {"interval": settings.scrub_interval, "checked": lc.scrubber.checked,
                      "failures": counters.scrub_failures, "last_pass": lc.scrubber.last_pass},
            "keep_warm": lc.keep_warm.last,
            "reconcile": lc.reconciled.to_json() if lc.reconciled is not None else None,
            "cluster": await self._cluster(),
        }

    async def _cluster(self) -> dict[str, Any] | None:
        """This node and every node in the catalogue (live or stale, with its last heartbeat); None
        for a single server."""
        if self.node is None:
            return None
        async with self.catalog.sessions() as s:
            rows = (await s.execute(select(Node).order_by(Node.started_at, Node.name))).scalars().all()
        now = time.time()
        nodes = [NodeRecord.from_row(row) for row in rows]
        return {
            "node": self.node.name,
            "on_duty": self.lifecycle.on_duty,
            "nodes": [{"id": n.id, "name": n.name, "host": n.host, "pid": n.pid, "url": n.advertise_url,
                       "models": n.models, "started_at": n.started_at, "heartbeat_at": n.heartbeat_at,
                       "state": n.state(now), "this": n.id == self.node.id} for n in nodes],
        }

    async def _models(self) -> list[dict[str, Any]]:
        pruner = self.lifecycle.pruner
        async with self.catalog.sessions() as s:
            busy = await pruner.busy_blobs(s)
        records = await self.catalog.list_models()
        users = Counter(str(layer.digest) for r in records for layer in set(r.manifest.all_layers))
        models = []
        for record in records:
            last = record.last_used or record.fetched_at or record.modified_at
            tag = TagInfo(record.name, str(record.manifest_digest), last, record.pinned)
            own = {str(layer.digest) for layer in record.manifest.all_layers if users[str(layer.digest)] == 1}
            models.append({
                "name": record.name.display_shortest(),
                "size": record.size,
                "digest": record.manifest_digest.hex,
                "pinned": record.pinned,
                "protected": pruner.protection(tag) or in_use(own, busy),
                "last_used": record.last_used,
                "modified_at": record.modified_at,
            })
        models.sort(key=lambda m: m["last_used"] or 0.0, reverse=True)
        return models

    def _fills(self) -> list[Fill]:
        return [fill for digest in self.in_flight.digests() if (fill := self.in_flight.get(digest)) is not None]

    def _fill(self, fill: Fill) -> dict[str, Any]:
        speed = fill.speed()
        left = fill.size - fill.completed
        return {
            "model": self._model(fill),
            "digest": str(fill.digest),
            "size": fill.size,
            "completed": fill.completed,
            "readers": self.readers.get(fill.digest, 0),
            "speed": speed,  # bytes/s since the transfer began; None in its first second
            "eta": left / speed if speed else None,  # seconds
            "fetched_by": fill.fetched_by,  # in a cluster, the node fetching it when not this one
        }

    def _model(self, fill: Fill) -> str:
        """The model a fill is for, named as the catalogue and `corral list` name it: the upstream's
        repositories are registry.ollama.ai's models (whatever CORRAL_UPSTREAM is), shown without
        the default host and namespace as ollama does. (A blob has no tag: none is shown.)"""
        if fill.source.endpoint != Endpoint(self.settings.upstream):
            return f"{fill.source.endpoint.host}/{fill.source.repository}"
        namespace, _, model = fill.source.repository.rpartition("/")
        return model if namespace.lower() == DEFAULT_NAMESPACE else fill.source.repository

    def _upstream(self) -> dict[str, Any]:
        """The configured upstream first (listed before any contact), then every other registry reached."""
        default = self.settings.upstream
        registries = {default: self.health.registries.get(default, Contact()), **self.health.registries}
        return {"offline": self.settings.offline,
                "registries": [_registry(base, contact) for base, contact in registries.items()]}


def _registry(base: str, contact: Contact) -> dict[str, Any]:
    if contact.ok_at is None and contact.error_at is None:
        state = "not contacted yet"
    else:
        state = "online" if contact.reachable else "unreachable"
    return {"registry": base, "state": state, "last_ok": contact.ok_at, "last_error": contact.error,
            "last_error_at": contact.error_at, "errors": contact.errors}
