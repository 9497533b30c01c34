"""How each upstream registry answered lately: reachable or not, the last error and when.

An operator looking at a mirror that serves stale tags wants to know at once whether the
upstream is down, since when, and why. `Upstream` records every attempt where it already knows
the outcome (an answer, or a failure worth retrying); the status page and /metrics read it.
Registries are keyed by their base URL (`scheme://host[:port]`); a data URL a registry
redirected to counts for that registry. A definitive refusal (404, 401, the 412 version gate)
is an answer, so it counts as reachable; the egress gate's refusals (offline, host not listed)
are corral's own decision and are not recorded at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Contact:
    """The latest outcomes with one registry (unix times)."""

    ok_at: float | None = None
    error: str | None = None
    error_at: float | None = None
    errors: int = 0  # failed attempts since the server started

    @property
    def reachable(self) -> bool:
        """Whether the latest attempt got an answer."""
        return self.error_at is None or (self.ok_at is not None and self.ok_at >= self.error_at)


class UpstreamHealth:
    def __init__(self) -> None:
        self.registries: dict[str, Contact] = {}

    def answered(self, registry: str) -> None:
        self.registries.setdefault(registry, Contact()).ok_at = time.time()

    def failed(self, registry: str, reason: str) -> None:
        contact = self.registries.setdefault(registry, Contact())
        contact.error, contact.error_at = reason, time.time()
        contact.errors += 1
