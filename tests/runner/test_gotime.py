"""Go's time.Time JSON form: RFC 3339, trailing fraction zeros trimmed, `Z` for a zero offset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from runner.gotime import go_time, go_time_ns, now_utc

NS = 1_000_000_000
MOMENT = 1_700_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone is the test's to set; put back afterwards."""
    yield
    monkeypatch.undo()
    time.tzset()


def _local(monkeypatch: pytest.MonkeyPatch, tz: str) -> None:
    monkeypatch.setenv("TZ", tz)
    time.tzset()


@pytest.mark.parametrize(("ns", "expected"), [
    (MOMENT * NS, "2023-11-14T22:13:20Z"),
    (MOMENT * NS + 1, "2023-11-14T22:13:20.000000001Z"),
    (MOMENT * NS + 120_000_000, "2023-11-14T22:13:20.12Z"),
    (MOMENT * NS + 123_456_789, "2023-11-14T22:13:20.123456789Z"),
])
def test_fractions_as_go_trims_them(ns: int, expected: str) -> None:
    assert go_time_ns(ns, utc=True) == expected


def test_local_zone_offsets(zone: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _local(monkeypatch, "UTC")
    assert go_time(MOMENT + 0.5) == "2023-11-14T22:13:20.5Z"  # a zero offset is Z, as Go writes it
    _local(monkeypatch, "Asia/Kolkata")
    assert go_time(MOMENT) == "2023-11-15T03:43:20+05:30"
    _local(monkeypatch, "America/Los_Angeles")
    assert go_time(MOMENT) == "2023-11-14T14:13:20-08:00"
    assert go_time(MOMENT, utc=True) == "2023-11-14T22:13:20Z"


def test_floats_give_microseconds_not_noise() -> None:
    assert go_time(MOMENT + 0.123456, utc=True) == "2023-11-14T22:13:20.123456Z"


def test_now_is_utc_and_parses_back() -> None:
    stamp = now_utc()
    assert stamp.endswith("Z")
    assert abs(datetime.fromisoformat(stamp).timestamp() - time.time()) < 5
