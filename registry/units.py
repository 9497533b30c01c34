"""Parsing of the human-friendly values settings accept: durations and byte sizes.

Durations use Go's grammar ("1h30m", "250ms", "-1m", "0") through the runner's stdlib-only
parser (`runner.duration`), the one `keep_alive` in requests goes through, so a setting and a
request accept exactly the same text; byte sizes accept decimal and binary units because
operators write quotas as "200GB" or "1.5TiB". Formatting goes the other way, as ollama prints
sizes, and the CPU/GPU split of a loaded model's bytes as `ollama ps` prints it.
"""

from __future__ import annotations

import re

from runner.duration import parse_go_duration


def parse_duration_setting(text: str) -> float:
    """Settings accept a Go duration or plain integer seconds, as OLLAMA_KEEP_ALIVE does."""
    s = text.strip()
    try:
        return float(int(s))
    except ValueError:
        return parse_go_duration(s)


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


def format_processor(size: int, size_vram: int) -> str:
    """Where a loaded model's bytes live, as `ollama ps` says it: "100% GPU", "48%/52% CPU/GPU"."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"
