"""Parsing of the human-friendly values settings and requests accept: Go durations and byte sizes.

Ollama reads `keep_alive` and `OLLAMA_KEEP_ALIVE` with Go's `time.ParseDuration`, so durations here
follow the same grammar ("1h30m", "250ms", "-1m", "0"); byte sizes accept decimal and binary units
because operators write quotas as "200GB" or "1.5TiB".
"""

from __future__ import annotations

import math
import re

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Return seconds for a Go duration string; raise ValueError like Go's ParseDuration would.

    A bare number is rejected (Go requires a unit), except "0".
    """
    s = text.strip()
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def parse_duration_setting(text: str) -> float:
    """Settings accept a Go duration or plain integer seconds, as OLLAMA_KEEP_ALIVE does."""
    s = text.strip()
    try:
        return float(int(s))
    except ValueError:
        return parse_go_duration(s)


def format_go_duration(seconds: float) -> str:
    """Format seconds the way Go's Duration.String() does ("5m0s", "1h0m0s", "300ms")."""
    if math.isinf(seconds):
        return "2562047h47m16.854775807s"
    if seconds == 0:
        return "0s"
    neg = seconds < 0
    s = abs(seconds)
    if s < 1:
        ms = s * 1000
        out = f"{ms:g}ms" if ms >= 1 else f"{s * 1e6:g}µs"
    else:
        hours, rem = divmod(s, 3600)
        minutes, secs = divmod(rem, 60)
        secs_text = f"{secs:.9f}".rstrip("0").rstrip(".")
        out = ""
        if hours:
            out += f"{int(hours)}h"
        if hours or minutes:
            out += f"{int(minutes)}m"
        out += f"{secs_text}s"
    return ("-" if neg else "") + out


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "p": 1000**5,
    "pb": 1000**5,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
    "pi": 1024**5,
    "pib": 1024**5,
}


def parse_byte_size(text: str) -> int:
    """Parse "200GB", "1.5TiB", "512k" or a plain byte count."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"invalid byte size {text!r}")
    factor = _SIZE_FACTORS.get(m.group(2).lower())
    if factor is None:
        raise ValueError(f"invalid byte size {text!r}")
    return int(float(m.group(1)) * factor)


def format_byte_size(n: int) -> str:
    """Human size with decimal units, as ollama's CLI prints them ("98 MB", "1.2 GB")."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
