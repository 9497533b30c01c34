"""The status page's traffic history and its SVG charts, on their own: bounded samples turned into
per-interval traffic, and charts that stay well-formed XML with gaps, single points and hostile titles."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from registry.cache.charts import line_chart
from registry.cache.counters import CacheCounters, Usage
from registry.cache.history import History
from registry.mirror.upstream import RateLimit

SVG = "{http://www.w3.org/2000/svg}"


def test_samples_become_per_interval_traffic_and_the_ring_keeps_one_span() -> None:
    counters, meter = CacheCounters(quota=0), RateLimit(0)
    history = History(counters, meter, interval=60, span=180)  # room for 4 samples
    history.sample()
    counters.served_hit(1000)
    counters.served_miss(3000)
    meter.taken = 3000
    counters.usage = Usage(stored=5000, filling=0)
    history.sample()
    (point,) = [p for p in history.points() if p.hit_bytes or p.miss_bytes]
    assert (point.hit_bytes, point.miss_bytes, point.upstream_bytes, point.cache_bytes) == (1000, 3000, 3000, 5000)
    assert point.hit_ratio == 0.25
    assert [p.hit_ratio for p in history.points()] == [0.25, None]  # nothing served since: no ratio

    for _ in range(10):
        history.sample()
    assert len(history.points()) == 4  # bounded, whatever the uptime: three intervals, and the one up to now


def test_a_chart_is_well_formed_svg_with_gaps_single_points_and_escaped_text() -> None:
    now = 100_000.0
    series = [(now - 3000, 1.0), (now - 2000, 4.0), (now - 1500, None), (now - 1000, 2.0), (now - 10, None)]
    svg = line_chart('<hits> & "misses"', series, now=now, span=3600, label=lambda v: f"{v:g} B/s")
    tree = ET.fromstring(svg)
    assert tree.tag == f"{SVG}svg"
    assert tree.find(f"{SVG}title").text == '<hits> & "misses"'
    assert len(tree.findall(f"{SVG}polyline")) == 1  # the two points before the gap
    assert len(tree.findall(f"{SVG}circle")) == 1  # the lone point after it
    assert "peak 4 B/s" in [t.text for t in tree.findall(f"{SVG}text")]
    xs = [float(pair.split(",")[0]) for pair in tree.find(f"{SVG}polyline").get("points").split()]
    assert xs == sorted(xs) and 0 < xs[0] < xs[-1] < 360

    empty = ET.fromstring(line_chart("nothing", [], now=now, span=3600, label=str))
    assert "no data yet" in [t.text for t in empty.findall(f"{SVG}text")]
