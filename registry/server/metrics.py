"""Prometheus metrics: one CollectorRegistry per application, served at GET /metrics.

Per application rather than prometheus-client's global registry, so that several servers in one
test process each report their own numbers. Everything is produced by one custom collector at
scrape time: event counts corral keeps as plain integers (hits and misses, evictions, scrub
failures), and live values read from the objects that own them (fills in flight and their
readers, upstream bytes metered by the rate limiter, fill verification failures, the runner's
token counters and queue depth, the cache size the pruner last measured). Nothing is mirrored
into a second set of variables that could drift.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from registry.model.names import Digest
    from registry.server.services import Services
    from runner.http.ollama import Runner

HIT, MISS = "hit", "miss"
FILL, SCRUB = "fill", "scrub"


@dataclass(frozen=True)
class Usage:
    """Bytes the blob store holds (verified blobs) and has promised to fills in progress."""

    stored: int
    filling: int

    @property
    def total(self) -> int:
        return self.stored + self.filling


@dataclass
class _Sources:
    services: Services
    runner: Runner
    readers: Counter[Digest]


class CacheMetrics:
    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.requests: Counter[str] = Counter({HIT: 0, MISS: 0})
        self.bytes: Counter[str] = Counter({HIT: 0, MISS: 0})
        self.evictions = 0
        self.pruned_bytes = 0
        self.scrub_failures = 0
        self.usage: Usage | None = None  # as the pruner last measured it
        self._sources: _Sources | None = None
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def attach(self, services: Services, runner: Runner, readers: Counter[Digest]) -> None:
        """Start reporting live values once the services exist (after startup)."""
        self._sources = _Sources(services, runner, readers)

    def served(self, result: str, nbytes: int) -> None:
        self.requests[result] += 1
        self.bytes[result] += nbytes

    def hit_ratio(self) -> float | None:
        total = self.requests[HIT] + self.requests[MISS]
        return self.requests[HIT] / total if total else None

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("corral_blob_requests", "Blob GETs answered from the store (hit) or "
                                       "streamed from a fill (miss).", labels=["result"])
        served = CounterMetricFamily("corral_blob_bytes_served", "Bytes of blob responses sent in full, "
                                     "by cache result.", labels=["result"])
        for result in (HIT, MISS):
            requests.add_metric([result], self.requests[result])
            served.add_metric([result], self.bytes[result])
        yield requests
        yield served
        yield CounterMetricFamily("corral_evictions", "Models evicted by quota pruning.", value=self.evictions)
        yield CounterMetricFamily("corral_pruned_bytes", "Bytes freed by pruning (evicted models and "
                                  "unreferenced blobs).", value=self.pruned_bytes)
        yield GaugeMetricFamily("corral_cache_quota_bytes", "CORRAL_MAX_CACHE (0 = none set; the disk still caps "
                                "the cache).", value=self.quota)
        if self.usage is not None:
            size = GaugeMetricFamily("corral_cache_bytes", "Bytes in the blob store: verified blobs, and "
                                     "the full size of blobs being filled.", labels=["kind"])
            size.add_metric(["stored"], self.usage.stored)
            size.add_metric(["filling"], self.usage.filling)
            yield size
        failures = CounterMetricFamily("corral_verification_failures", "Blobs whose sha256 did not match: "
                                       "upstream fills and scrub re-hashes.", labels=["source"])
        failures.add_metric([SCRUB], self.scrub_failures)
        if self._sources is not None:
            failures.add_metric([FILL], self._sources.services.fills.verification_failures)
            yield from self._live(self._sources)
        yield failures

    def _live(self, sources: _Sources) -> Iterator[Metric]:
        fills = sources.services.fills
        active = fills.active_digests()
        yield CounterMetricFamily("corral_upstream_bytes", "Blob bytes received from upstream registries.",
                                  value=sources.services.upstream.rate.taken)
        yield GaugeMetricFamily("corral_fills_in_flight", "Blobs being filled from upstream.", value=len(active))
        readers = GaugeMetricFamily("corral_fill_readers", "Clients reading each blob that is being filled.",
                                    labels=["digest"])
        for digest in active:
            readers.add_metric([str(digest)], sources.readers.get(digest, 0))
        yield readers
        stats = sources.runner.stats
        tokens = CounterMetricFamily("corral_runner_tokens", "Tokens processed by the runner.", labels=["kind"])
        tokens.add_metric(["generated"], stats.tokens_generated)
        tokens.add_metric(["prompt"], stats.prompt_tokens)
        yield tokens
        yield GaugeMetricFamily("corral_runner_queue_depth", "Requests waiting for a model load or a free slot.",
                                value=stats.queue_depth)
        yield GaugeMetricFamily("corral_runner_loaded_models", "Models loaded in the runner.",
                                value=len(sources.runner.loaded_names()))


METRICS: web.AppKey[CacheMetrics] = web.AppKey("metrics", CacheMetrics)


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
