"""Timestamps formatted as Go's time.Time marshals them (RFC 3339 with local offset)."""

from __future__ import annotations

from datetime import datetime


def go_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat()
