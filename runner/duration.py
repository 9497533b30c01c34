"""Go's duration grammar (time.ParseDuration), with Go's error messages.

A leaf with no imports beyond the standard library: the runner reads `keep_alive` with it, and the
registry's settings use it too (through `registry.units`), so a setting and a request accept
exactly the same text without loading any of the runner's machinery.
"""

from __future__ import annotations

import re

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)?")


def parse_go_duration(text: str) -> float:
    """Seconds for a Go duration string, with time.ParseDuration's grammar and error messages."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}"')
        if m.group(2) is None:
            raise ValueError(f'time: missing unit in duration "{text}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total
