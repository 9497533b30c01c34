"""Prometheus metrics: one CollectorRegistry per application, served at GET /metrics.

Per application rather than prometheus-client's global registry, so that several servers in one
test process each report their own numbers. Everything is produced by one custom collector at
scrape time: the event counts the cache keeps (`CacheCounters`), and live values read from the
objects that own them (fills in flight and their readers, upstream bytes metered by the rate
limiter, fill verification failures, the runner's token counters and queue depth). Nothing is
mirrored into a second set of variables that could drift. It lives in the composition root
because it is the one place that sees all of those owners.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from registry.cache.counters import HIT, MISS, CacheCounters
from registry.mirror.fills import Fills
from registry.mirror.upstream import Upstream
from registry.model.names import Digest
from runner.http.ollama import Runner

FILL, SCRUB = "fill", "scrub"


class Metrics:
    def __init__(self, counters: CacheCounters, fills: Fills, upstream: Upstream, readers: Counter[Digest],
                 runner: Runner) -> None:
        self.counters = counters
        self.fills = fills
        self.upstream = upstream
        self.readers = readers  # open /v2 blob GETs per digest (mirror.responses.BlobMeter)
        self.runner = runner
        self.registry = CollectorRegistry()
        self.registry.register(self)

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def collect(self) -> Iterator[Metric]:
        counters = self.counters
        requests = CounterMetricFamily("corral_blob_requests", "Blob GETs answered from the store (hit) or "
                                       "streamed from a fill (miss).", labels=["result"])
        served = CounterMetricFamily("corral_blob_bytes_served", "Bytes of blob responses sent in full, "
                                     "by cache result.", labels=["result"])
        for result in (HIT, MISS):
            requests.add_metric([result], counters.requests[result])
            served.add_metric([result], counters.bytes[result])
        yield requests
        yield served
        yield CounterMetricFamily("corral_evictions", "Models evicted by quota pruning.", value=counters.evictions)
        yield CounterMetricFamily("corral_pruned_bytes", "Bytes freed by pruning (evicted models and "
                                  "unreferenced blobs).", value=counters.pruned_bytes)
        yield GaugeMetricFamily("corral_cache_quota_bytes", "CORRAL_MAX_CACHE (0 = none set; the disk still caps "
                                "the cache).", value=counters.quota)
        if counters.usage is not None:
            size = GaugeMetricFamily("corral_cache_bytes", "Bytes in the blob store: verified blobs, and "
                                     "the full size of blobs being filled.", labels=["kind"])
            size.add_metric(["stored"], counters.usage.stored)
            size.add_metric(["filling"], counters.usage.filling)
            yield size
        failures = CounterMetricFamily("corral_verification_failures", "Blobs whose sha256 did not match: "
                                       "upstream fills and scrub re-hashes.", labels=["source"])
        failures.add_metric([SCRUB], counters.scrub_failures)
        failures.add_metric([FILL], self.fills.verification_failures)
        yield from self._mirror()
        yield from self._runner()
        yield failures

    def _mirror(self) -> Iterator[Metric]:
        active = self.fills.in_flight.digests()
        yield CounterMetricFamily("corral_upstream_bytes", "Blob bytes received from upstream registries.",
                                  value=self.upstream.rate.taken)
        yield GaugeMetricFamily("corral_fills_in_flight", "Blobs being filled from upstream.", value=len(active))
        readers = GaugeMetricFamily("corral_fill_readers", "Clients reading each blob that is being filled.",
                                    labels=["digest"])
        for digest in active:
            readers.add_metric([str(digest)], self.readers.get(digest, 0))
        yield readers

    def _runner(self) -> Iterator[Metric]:
        stats = self.runner.stats
        tokens = CounterMetricFamily("corral_runner_tokens", "Tokens processed by the runner.", labels=["kind"])
        tokens.add_metric(["generated"], stats.tokens_generated)
        tokens.add_metric(["prompt"], stats.prompt_tokens)
        yield tokens
        yield GaugeMetricFamily("corral_runner_queue_depth", "Requests waiting for a model load or a free slot.",
                                value=stats.queue_depth)
        yield GaugeMetricFamily("corral_runner_loaded_models", "Models loaded in the runner.",
                                value=len(self.runner.loaded_names()))
