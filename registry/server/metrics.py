"""Prometheus metrics: one CollectorRegistry per application, served at GET /metrics.

Per application rather than prometheus-client's global registry, so that several servers in one
test process each report their own numbers. corral's own numbers are produced by one custom
collector at scrape time: the event counts the cache keeps (`CacheCounters`), the requests
answered (`server.access.RequestCounts`), and live values read from the objects that own them
(fills in flight and their readers, upstream bytes metered by the rate limiter and each
registry's health, fill verification failures, the disk, the runner's token counters, loaded
models and queue depth). Nothing is mirrored into a second set of variables that could drift.
prometheus-client's `ProcessCollector` adds the `process_*` metrics (CPU seconds, resident
memory, open files; on Linux), and `corral_build_info` says which versions are running. It
lives in the composition root because it is the one place that sees all of those owners.

The byte counters give the hit ratio by bytes:
`corral_blob_bytes_served_total{result="hit"}` over the sum of both results; the bandwidth saved
is the bytes served less `corral_upstream_bytes_total`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from registry import __version__
from registry.cache.counters import HIT, MISS, CacheCounters
from registry.mirror.fills import Fills
from registry.mirror.upstream import Upstream
from registry.model.names import Digest
from registry.server.access import RequestCounts
from runner.http.ollama import Runner

FILL, SCRUB = "fill", "scrub"


class Metrics:
    def __init__(self, counters: CacheCounters, fills: Fills, upstream: Upstream, readers: Counter[Digest],
                 runner: Runner, requests: RequestCounts, store_root: Path) -> None:
        self.counters = counters
        self.fills = fills
        self.upstream = upstream
        self.readers = readers  # open /v2 blob GETs per digest (mirror.responses.BlobMeter)
        self.runner = runner
        self.requests = requests
        self.store_root = store_root  # its filesystem's size and free space
        self.build = {"version": __version__, "python": platform.python_version(),
                      "llama_cpp": importlib.metadata.version("llama_cpp_python")}
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily("corral_build", "Versions of corral, Python and llama-cpp-python running.",
                               value=self.build)
        yield from self._http()
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
        disk = shutil.disk_usage(self.store_root)  # one statvfs: no reason to leave the event loop
        space = GaugeMetricFamily("corral_disk_bytes", "The blob store's filesystem: its size and free space.",
                                  labels=["kind"])
        space.add_metric(["total"], disk.total)
        space.add_metric(["free"], disk.free)
        yield space
        failures = CounterMetricFamily("corral_verification_failures", "Blobs whose sha256 did not match: "
                                       "upstream fills and scrub re-hashes.", labels=["source"])
        failures.add_metric([SCRUB], counters.scrub_failures)
        failures.add_metric([FILL], self.fills.verification_failures)
        yield from self._mirror()
        yield from self._runner()
        yield failures

    def _http(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("corral_http_requests", "HTTP requests answered, by method and status "
                                       "(499: the client left first).", labels=["method", "status"])
        for (method, status), count in sorted(self.requests.counts.items()):
            requests.add_metric([method, str(status)], count)
        yield requests

    def _mirror(self) -> Iterator[Metric]:
        active = self.fills.in_flight.digests()
        yield CounterMetricFamily("corral_upstream_bytes", "Blob bytes received from upstream registries.",
                                  value=self.upstream.rate.taken)
        up = GaugeMetricFamily("corral_upstream_up", "1 when a registry's latest request got an answer, 0 when "
                               "it failed (DNS, connection, timeout, 5xx); registries contacted since start.",
                               labels=["registry"])
        errors = CounterMetricFamily("corral_upstream_errors", "Failed requests to a registry (each retry "
                                     "counts).", labels=["registry"])
        for registry, contact in sorted(self.upstream.health.registries.items()):
            up.add_metric([registry], 1 if contact.reachable else 0)
            errors.add_metric([registry], contact.errors)
        yield up
        yield errors
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

