"""The last 24 hours of cache traffic in memory, for the status page's charts.

Prometheus keeps history for whoever runs it; the status page must show the last day without
one. Once a minute the running totals are sampled (bytes served from the store, streamed while
filling, fetched upstream, and what the store holds) into a ring of at most a day of samples:
about 1,440 small tuples, whatever the uptime. The history starts empty at each start; nothing
is written to disk. Charts want rates, so `points` turns consecutive samples into per-interval
differences, the last one running up to now.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass

from registry.cache.counters import HIT, MISS, CacheCounters
from registry.mirror.upstream import RateLimit

SAMPLE_INTERVAL = 60.0
SPAN = 24 * 3600.0


@dataclass(frozen=True)
class Totals:
    """Running totals at one moment (unix time)."""

    at: float
    hit_bytes: int
    miss_bytes: int
    upstream_bytes: int
    cache_bytes: int  # what the store holds, as the pruner last measured it


@dataclass(frozen=True)
class Point:
    """What happened between two samples, stamped with the later one."""

    at: float
    seconds: float
    hit_bytes: int
    miss_bytes: int
    upstream_bytes: int
    cache_bytes: int

    @property
    def hit_ratio(self) -> float | None:
        """Share of the bytes served that came from the store; None when nothing was served."""
        served = self.hit_bytes + self.miss_bytes
        return self.hit_bytes / served if served else None


class History:
    def __init__(self, counters: CacheCounters, upstream: RateLimit, interval: float = SAMPLE_INTERVAL,
                 span: float = SPAN) -> None:
        self.counters = counters
        self.upstream = upstream  # every upstream blob byte passes its meter
        self.interval = interval
        self.span = span
        self._samples: deque[Totals] = deque(maxlen=int(span / interval) + 1)

    def read(self) -> Totals:
        counters = self.counters
        return Totals(time.time(), counters.bytes[HIT], counters.bytes[MISS], self.upstream.taken,
                      counters.usage.total if counters.usage is not None else 0)

    def sample(self) -> None:
        self._samples.append(self.read())

    async def loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def points(self) -> list[Point]:
        """Per-interval traffic over the span, oldest first, the last interval ending now."""
        totals = [*self._samples, self.read()]
        horizon = totals[-1].at - self.span
        return [
            Point(b.at, b.at - a.at, b.hit_bytes - a.hit_bytes, b.miss_bytes - a.miss_bytes,
                  b.upstream_bytes - a.upstream_bytes, b.cache_bytes)
            for a, b in itertools.pairwise(totals)
            if b.at >= horizon and b.at > a.at
        ]
