"""Watching a real `corral serve`: the status page in headless Chromium, /metrics against the shipped
Grafana dashboard, and JSON log lines on stderr.

One server for the module, in front of Debian's docker-registry holding the scripted bigram model:
it has served every blob once while filling it (a miss) and once more from the store (a hit, as a
Range request), and has the model loaded in the runner, so every part of the page and every
metric has something to show, and the hit ratio by bytes is exactly one half.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from registry.model.manifest import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_TEMPLATE
from tests.support.bigram import write_scripted_gguf
from tests.support.docker_registry import MANIFEST_V2, DockerRegistry, push_model, start_registry
from tests.support.models import CHATML_TEMPLATE
from tests.support.server import ServerProcess, start_server

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = shutil.which("chromium")
WINDOW = (1280, 1500)
RATE = 1_000_000  # CORRAL_UPSTREAM_RATE, bytes/s: BIG takes seconds to fill, HUGE a minute
BIG = 3_000_000
HUGE = 60_000_000


@dataclass
class Watched:
    server: ServerProcess
    registry: DockerRegistry
    model: str  # the loaded model's name as corral lists it
    blobs: dict[str, int]  # digest: size of the blobs served in full, from upstream, then from the store
    served: int  # their bytes in each round (the two models share their config blob: it is served in each)
    filling: str  # the model whose blob is still being filled


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    root = tmp_path_factory.mktemp("watched")
    registry = start_registry(root / "upstream")
    server = None
    try:
        push_model(registry.url, "library/bigram", "latest", [
            (MEDIA_MODEL, write_scripted_gguf(root)), (MEDIA_TEMPLATE, CHATML_TEMPLATE.encode()),
            (MEDIA_PARAMS, b'{"stop":["<|im_end|>"]}'),
        ])
        for name, size in (("big", BIG), ("huge", HUGE)):
            push_model(registry.url, f"library/{name}", "latest", [(MEDIA_MODEL, random.Random(size).randbytes(size))])
        server = start_server(root / "corral", extra_env={
            "CORRAL_OFFLINE": "0", "CORRAL_UPSTREAM": registry.url, "CORRAL_MAX_CACHE": "1GB",
            "CORRAL_UPSTREAM_RATE": f"{RATE}", "CORRAL_LOG_FORMAT": "json",
        })
        served: dict[str, int] = {}
        served_bytes = 0
        for repository in ("library/bigram", "library/big"):
            blobs = _blobs(server, repository)
            # from upstream (BIG, seconds long, surely streamed while filling: a miss), then from the store (hits)
            for headers in ({}, {"Range": "bytes=0-"}):
                for digest in blobs:
                    assert httpx.get(f"{server.url}/v2/{repository}/blobs/{digest}", headers=headers,
                                     timeout=60).is_success
            served.update(blobs)
            served_bytes += sum(blobs.values())
        model = "bigram:latest"  # /v2/library/bigram names registry.ollama.ai's model, whatever the upstream
        answer = httpx.post(server.url + "/api/generate", json={"model": model, "prompt": "hi", "stream": False},
                            timeout=120)
        assert answer.status_code == 200, answer.text
        huge = next(iter(_blobs(server, "library/huge")))  # its one layer
        with httpx.stream("GET", f"{server.url}/v2/library/huge/blobs/{huge}", timeout=60) as started:
            assert started.status_code == 200  # left after the headers: the fill goes on, for a minute
        deadline = time.monotonic() + 30
        while not any(fill["speed"] for fill in httpx.get(server.url + "/api/corral/status").json()["fills"]):
            assert time.monotonic() < deadline, "the fill's speed never showed"
            time.sleep(0.2)  # a speed is shown from the fill's second second on
        yield Watched(server, registry, model, served, served_bytes, "huge")  # as `corral list` names it
    finally:
        if server is not None:
            server.stop()
        registry.stop()


def _blobs(server: ServerProcess, repository: str) -> dict[str, int]:
    """The blobs (digest: size) of a manifest fetched through corral, which lets them be fetched upstream."""
    manifest = httpx.get(f"{server.url}/v2/{repository}/manifests/latest", headers={"Accept": MANIFEST_V2})
    assert manifest.status_code == 200, manifest.text
    doc = manifest.json()
    return {entry["digest"]: entry["size"] for entry in (*doc["layers"], doc["config"])}


def test_the_status_page_shows_every_section_and_renders_cleanly_in_chromium(watched: Watched,
                                                                             tmp_path: Path) -> None:
    page = httpx.get(watched.server.url + "/corral").text
    assert "<script" not in page.lower()  # nothing to run: the page works with JavaScript off
    assert '<meta http-equiv="refresh" content="10">' in page
    for section in ("storage", "traffic", "upstream", "runner", "charts", "fills", "models"):
        assert f'<section id="{section}"' in page, section
    for meter in ("quota-meter", "disk-meter"):
        assert re.search(rf'<div id="{meter}" class="meter" role="meter"[^>]* aria-valuenow="[1-9]\d*"', page), meter
    assert "of 1.0 GB (" in page  # the quota, with the share used
    upstream = page[page.index('<section id="upstream"'):page.index('<section id="runner"')]
    assert watched.registry.url in upstream and '<span class="badge online">online</span>' in upstream
    runner = page[page.index('<section id="runner"'):page.index('<section id="charts"')]
    assert f"<td>{watched.model}</td>" in runner and "100% CPU" in runner
    assert re.search(r"<td>in \d+ min</td>", runner)
    traffic = page[page.index('<section id="traffic"'):page.index('<section id="upstream"')]
    status = httpx.get(watched.server.url + "/api/corral/status").json()
    ratio = status["traffic"]["hit_ratio_by_bytes"]
    assert "served from cache" in traffic and "bandwidth saved" in traffic and f"<b>{100 * ratio:.0f}%</b>" in traffic
    fills = page[page.index('<section id="fills"'):page.index('<section id="models"')]
    assert "Fills in progress (1)" in fills and f"<td>{watched.filling}</td>" in fills
    assert re.search(r'<td class="num">[\d.]+ [KM]B/s</td><td class="num">\d+ (s|min)</td>', fills), fills
    svgs = re.findall(r"<svg .*?</svg>", page, re.DOTALL)
    assert len(svgs) == 3
    for svg in svgs:
        tree = ET.fromstring(svg)  # well-formed XML, in the SVG namespace
        assert tree.tag == "{http://www.w3.org/2000/svg}svg"
        assert tree.find("{http://www.w3.org/2000/svg}title") is not None
    assert all("no data yet" not in svg for svg in svgs)  # traffic since the first sample is drawn

    assert CHROMIUM is not None, "Debian's chromium is missing: run scripts/bootstrap"
    shot = tmp_path / "status.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
         f"--screenshot={shot}", watched.server.url + "/corral"],
        check=True, capture_output=True, timeout=90,
    )
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == WINDOW
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text, meters and charts, not a blank or error page


def test_metrics_export_every_name_the_grafana_dashboard_uses(watched: Watched) -> None:
    text = httpx.get(watched.server.url + "/metrics").text
    families = list(text_string_to_metric_families(text))
    exported = exported_names(families)
    samples = {s.name: s for f in families for s in f.samples}
    assert samples["process_resident_memory_bytes"].value > 10_000_000
    assert samples["process_cpu_seconds_total"].value > 0
    build = samples["corral_build_info"]
    assert build.value == 1 and set(build.labels) == {"version", "python", "llama_cpp"}
    assert all(build.labels.values())
    by_result = {s.labels["result"]: s.value for s in families_named(families, "corral_blob_bytes_served")}
    assert by_result["miss"] >= BIG and by_result["hit"] >= watched.served
    assert by_result["hit"] + by_result["miss"] == 2 * watched.served
    assert samples["corral_upstream_bytes_total"].value > sum(watched.blobs.values())  # and the huge blob's fill runs
    statuses = {(s.labels["method"], s.labels["status"]) for s in families_named(families, "corral_http_requests")}
    assert ("GET", "200") in statuses and ("POST", "200") in statuses
    assert samples["corral_runner_loaded_models"].value == 1
    assert samples["corral_upstream_up"].labels == {"registry": watched.registry.url}

    dashboard = json.loads((REPO / "config" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 10
    used = {name for expr in expressions for name in promql_metric_names(expr)}
    for variable in dashboard["templating"]["list"]:  # label_values(metric, label) names one metric
        used.update(re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,", variable.get("query", "")))
    assert {"corral_cache_quota_bytes", "process_cpu_seconds_total", "corral_http_requests_total",
            "corral_build_info"} <= used
    assert used - exported == set()


def test_json_logs_give_one_object_per_line_with_the_access_fields(watched: Watched) -> None:
    httpx.get(watched.server.url + "/api/tags?probe=1")
    upload = f"/api/blobs/sha256:{'0' * 64}"
    with socket.create_connection(("127.0.0.1", watched.server.port)) as sock:  # leaves mid-body
        sock.sendall(f"POST {upload} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n".encode()
                     + b"x" * 1000)
    deadline = time.monotonic() + 20
    while upload not in watched.server.log():
        assert time.monotonic() < deadline, "the abandoned upload was never logged"
        time.sleep(0.1)
    records = [json.loads(line) for line in watched.server.log().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"] == "corral" and r["message"].startswith("corral listening on") for r in records)
    access = [r for r in records if r["logger"] == "corral.access"]
    tags = [r for r in access if r["path"] == "/api/tags"]
    assert tags, access[-3:]
    line = tags[-1]
    assert line["level"] == "INFO" and line["method"] == "GET" and line["status"] == 200
    assert line["client"] == "127.0.0.1" and line["bytes"] > 0 and line["duration_ms"] >= 0
    assert "probe" not in line["message"]  # query strings stay out of the log
    (left,) = [r for r in access if r["path"] == upload]  # one line, though aiohttp answers it with a 500
    assert left["status"] == 499 and left["method"] == "POST"
    for digest, size in watched.blobs.items():  # streamed from a fill (200), then a file from the store (206)
        sent = {r["status"]: r["bytes"] for r in access if r["path"].endswith(f"/blobs/{digest}")}
        assert sent.keys() == {200, 206} and min(sent.values()) > size, sent  # the body, and headers


def families_named(families: list, name: str) -> list:
    return [s for f in families if f.name == name for s in f.samples]


_SUFFIXES = {"counter": ("_total", "_created"), "info": ("_info",), "histogram": ("_bucket", "_sum", "_count",
             "_created"), "summary": ("_sum", "_count", "_created"), "gaugehistogram": ("_bucket", "_gsum", "_gcount")}


def exported_names(families: list) -> set[str]:
    """Every name a PromQL query can select: each sample's, and each family's with its type's suffixes
    (a histogram with no observation yet still answers to `_bucket`)."""
    names = {s.name for f in families for s in f.samples}
    for family in families:
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
    return names


_PROMQL_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "atan2", "inf", "nan",
})


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression, conservatively: strings, label matchers, ranges, label lists
    and Grafana variables are removed; of the identifiers left, function calls and keywords are not names."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):  # not the `h` of `1h` nor the `e3` of `1e3`
        word, rest = match.group(), text[match.end():].lstrip()
        if word in _PROMQL_WORDS or rest.startswith("("):
            continue
        names.add(word)
    return names


def test_promql_names_are_read_conservatively() -> None:
    expr = ('sum by (result) (rate(corral_blob_bytes_served_total{result="hit",x=~"a{b}"}[$__rate_interval])) '
            '/ on() group_left sum(rate(corral_upstream_bytes_total[5m] offset 1h)) > bool 0 '
            'or histogram_quantile(0.9, sum by (le) (rate(x_seconds_bucket[5m])))')
    assert promql_metric_names(expr) == {"corral_blob_bytes_served_total", "corral_upstream_bytes_total",
                                         "x_seconds_bucket"}
