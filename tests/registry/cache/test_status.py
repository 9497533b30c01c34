"""Observability and keep-warm: the status page in a real headless browser (no JavaScript in it),
/metrics through Prometheus' own parser, the admin token, and models pulled before anyone asks."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry.server.app import create_app
from tests.registry.conftest import make_settings
from tests.support.cache import cache_mirror, lifecycle_of, tags, wait_for
from tests.support.digests import sha256_bytes as sha
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.legacy_pull import OLLAMA_UA, LegacyPuller
from tests.support.mirror import SMALL_SEGMENT, model_layers, services_of

CHROMIUM = shutil.which("chromium")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics body, parsed by prometheus_client's text parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def headless_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None, "Debian's chromium is missing: run scripts/bootstrap"
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


async def test_status_page_in_chromium_and_metrics_move_after_a_warm_pull(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    layers = model_layers(5, 200_000)
    fake_registry.add_model("library/smol", "latest", layers)
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, CORRAL_MAX_CACHE="10GB")
    base = str(mirror.make_url(""))
    await LegacyPuller(base, tmp_path / "cold", min_part=SMALL_SEGMENT).pull("library/smol", "latest")
    cold = samples(await (await mirror.get("/metrics")).text())
    await LegacyPuller(base, tmp_path / "warm", min_part=SMALL_SEGMENT).pull("library/smol", "latest")
    warm = samples(await (await mirror.get("/metrics")).text())

    hits = ("corral_blob_requests_total", (("result", "hit"),))
    misses = ("corral_blob_requests_total", (("result", "miss"),))
    hit_bytes = ("corral_blob_bytes_served_total", (("result", "hit"),))
    assert cold[misses] >= 1  # the first GET of each blob started its fill
    assert warm[hits] >= cold[hits] + 4  # at least one ranged GET per blob, all from the store
    assert warm[misses] == cold[misses]
    assert warm[hit_bytes] - cold[hit_bytes] >= sum(len(data) for _, data in layers)
    assert warm[("corral_upstream_bytes_total", ())] == cold[("corral_upstream_bytes_total", ())] > 200_000
    assert warm[("corral_fills_in_flight", ())] == 0
    assert warm[("corral_cache_quota_bytes", ())] == 10e9
    assert warm[("corral_evictions_total", ())] == 0
    assert ("corral_runner_queue_depth", ()) in warm
    assert ("corral_runner_tokens_total", (("kind", "generated"),)) in warm

    page = await (await mirror.get("/corral")).text()
    assert "<script" not in page.lower()  # nothing to run: the page works with JavaScript off
    dom = await headless_dom(str(mirror.make_url("/corral")), tmp_path / "chromium-profile")
    assert '<meta http-equiv="refresh" content="10">' in dom
    models = dom[dom.index('<section id="models"'):]
    assert "<td>smol:latest</td>" in models  # /v2 paths name registry.ollama.ai's models
    assert "hit ratio by bytes" in dom and "Fills in progress (0)" in dom
    traffic = (await (await mirror.get("/api/corral/status")).json())["traffic"]
    assert traffic["served_from_cache"] == warm[hit_bytes]
    assert traffic["served_while_filling"] == warm[("corral_blob_bytes_served_total", (("result", "miss"),))]
    assert traffic["fetched_upstream"] == warm[("corral_upstream_bytes_total", ())]
    served = traffic["served_from_cache"] + traffic["served_while_filling"]
    assert traffic["saved"] == served - traffic["fetched_upstream"] > 0
    assert traffic["hit_ratio_by_bytes"] == traffic["served_from_cache"] / served


async def test_fills_in_progress_and_their_readers_are_visible(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    layers = model_layers(7, 300_000)
    weights = layers[0][1]
    fake_registry.add_model("library/slow", "latest", layers)
    fake_registry.cdn_rate = 100_000
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host)
    services_of(mirror).fills.min_segment = len(weights)  # one segment: the weights take three seconds
    assert (await mirror.get("/v2/library/slow/manifests/latest", headers={"User-Agent": OLLAMA_UA})).status == 200
    reader = asyncio.create_task(mirror.get(f"/v2/library/slow/blobs/{sha(weights)}"))

    async def filling() -> bool:
        return bool((await (await mirror.get("/api/corral/status")).json())["fills"])

    await wait_for(filling)
    (fill,) = (await (await mirror.get("/api/corral/status")).json())["fills"]
    assert fill["digest"] == sha(weights) and fill["size"] == len(weights) and fill["readers"] == 1
    assert fill["model"] == "slow"  # registry.ollama.ai's library/slow, as `corral list` names its tags

    async def timed() -> bool:  # a speed from the fill's second second on, and so the time left
        (fill,) = (await (await mirror.get("/api/corral/status")).json())["fills"]
        return fill["speed"] is not None

    await wait_for(timed)
    (fill,) = (await (await mirror.get("/api/corral/status")).json())["fills"]
    assert 0 < fill["speed"] <= 1.5 * fake_registry.cdn_rate  # the CDN's pace
    assert fill["eta"] == pytest.approx((fill["size"] - fill["completed"]) / fill["speed"], rel=0.1)
    during = samples(await (await mirror.get("/metrics")).text())
    assert during[("corral_fills_in_flight", ())] == 1
    assert during[("corral_fill_readers", (("digest", sha(weights)),))] == 1
    assert during[("corral_cache_bytes", (("kind", "filling"),))] == len(weights)
    assert "Fills in progress (1)" in await (await mirror.get("/corral")).text()
    assert await (await reader).read() == weights


async def test_keep_warm_models_arrive_unasked_and_are_never_evicted(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    fake_registry.add_model("library/standard", "latest", model_layers(6, 50_000))
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host, CORRAL_SYNC="standard")

    async def present() -> bool:
        return bool(tags(tmp_path)) and bool(lifecycle_of(mirror).keep_warm.last)

    await wait_for(present)
    status = await (await mirror.get("/api/corral/status")).json()
    assert status["keep_warm"]["standard:latest"]["ok"] is True
    (model,) = status["models"]
    assert model["name"] == "standard:latest" and model["protected"] == "kept by 'standard'"


async def test_admin_routes_need_the_token_beyond_loopback(aiohttp_client, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, OLLAMA_HOST="0.0.0.0:11434", CORRAL_ADMIN_TOKEN="s3cret")
    client = await aiohttp_client(await create_app(settings))
    for path in ("/api/corral/prune", "/api/corral/scrub", "/api/corral/pin", "/api/corral/unpin"):
        assert (await client.post(path, json={"model": "x"})).status == 401
    token = {"Authorization": "Bearer s3cret"}
    assert (await client.post("/api/corral/prune", json={"dry_run": True}, headers=token)).status == 200
    assert (await client.post("/api/corral/pin", json={"model": "x"}, headers=token)).status == 404
    for path in ("/api/corral/status", "/corral", "/metrics"):
        assert (await client.get(path)).status == 200


async def test_the_upstream_state_follows_its_answers(
    aiohttp_client, tmp_path: Path, fake_registry: FakeOllamaRegistry
) -> None:
    fake_registry.add_model("library/smol", "latest", model_layers(3, 1000))
    mirror = await cache_mirror(aiohttp_client, tmp_path, fake_registry.url,
                                CORRAL_ALLOWED_HOSTS=fake_registry.cdn_host)

    async def upstream() -> dict:
        (registry,) = (await (await mirror.get("/api/corral/status")).json())["upstream"]["registries"]
        assert registry["registry"] == fake_registry.url
        return registry

    assert (await upstream())["state"] == "not contacted yet"
    assert (await mirror.get("/v2/library/smol/manifests/latest", headers={"User-Agent": OLLAMA_UA})).status == 200
    answered = await upstream()
    assert answered["state"] == "online" and answered["last_error"] is None and answered["errors"] == 0

    await fake_registry.close()  # the upstream goes away: connections are refused
    assert (await mirror.get("/v2/library/smol/manifests/other", headers={"User-Agent": OLLAMA_UA})).status == 502
    failed = await upstream()
    assert failed["state"] == "unreachable" and failed["last_ok"] == answered["last_ok"]
    assert "Cannot connect" in failed["last_error"] and failed["errors"] == 2  # both attempts
    metrics = samples(await (await mirror.get("/metrics")).text())
    assert metrics[("corral_upstream_up", (("registry", fake_registry.url),))] == 0
    assert metrics[("corral_upstream_errors_total", (("registry", fake_registry.url),))] == 2
    page = await (await mirror.get("/corral")).text()
    assert '<span class="badge unreachable">unreachable</span>' in page and "Cannot connect" in page
