"""Timestamps as Go's encoding/json writes a time.Time: RFC 3339 with up to nine fraction digits.

Go marshals with RFC3339Nano: the fraction loses its trailing zeros (the dot too when nothing is
left), and a zero offset is written `Z`, any other `±hh:mm`. ollama stamps `created_at` with
`time.Now().UTC()` and `modified_at` / `expires_at` in the server's local zone, so both forms are
here. Standard library only: the registry's `/api/tags` and `/api/show` use it too.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

_NS = 1_000_000_000


def go_time_ns(ns: int, *, utc: bool = False) -> str:
    """Unix nanoseconds as Go writes the time.Time: local zone unless `utc`."""
    seconds, fraction = divmod(ns, _NS)
    moment = datetime.fromtimestamp(seconds, UTC)
    if not utc:
        moment = moment.astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + _offset(moment)


def go_time(seconds: float, *, utc: bool = False) -> str:
    """Unix seconds from a float, which holds microseconds at best: finer digits would be noise."""
    return go_time_ns(round(seconds * 1_000_000) * 1000, utc=utc)


def now_utc() -> str:
    """`time.Now().UTC()` marshalled: the `created_at` of every generate and chat chunk."""
    return go_time_ns(time.time_ns(), utc=True)


def _offset(moment: datetime) -> str:
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    if minutes == 0:
        return "Z"
    sign = "+" if minutes > 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"
