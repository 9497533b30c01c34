"""The cache's event counts: blob hits and misses, evictions, pruned bytes, scrub failures.

Plain integers kept by whoever causes the event (the pruner, the scrubber, the blob responses
through the callbacks the server hands them), read by the status page and by the Prometheus
collector at scrape time. One object per server, so several servers in one test process each
report their own numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

HIT, MISS = "hit", "miss"


@dataclass(frozen=True)
class Usage:
    """Bytes the blob store holds (verified blobs) and has promised to fills in progress."""

    stored: int
    filling: int

    @property
    def total(self) -> int:
        return self.stored + self.filling


class CacheCounters:
    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.requests: Counter[str] = Counter({HIT: 0, MISS: 0})
        self.bytes: Counter[str] = Counter({HIT: 0, MISS: 0})
        self.evictions = 0
        self.pruned_bytes = 0
        self.scrub_failures = 0
        self.usage: Usage | None = None  # as the pruner last measured it

    def served(self, result: str, nbytes: int) -> None:
        self.requests[result] += 1
        self.bytes[result] += nbytes

    def served_hit(self, nbytes: int) -> None:
        self.served(HIT, nbytes)

    def served_miss(self, nbytes: int) -> None:
        self.served(MISS, nbytes)

    def hit_ratio(self) -> float | None:
        total = self.requests[HIT] + self.requests[MISS]
        return self.requests[HIT] / total if total else None
