"""HTTP face of the cache lifecycle, and its wiring into the application.

Routes: `GET /metrics` (Prometheus text), `GET /api/corral/status` (JSON), `GET /corral` (the
status page), and the admin routes `POST /api/corral/prune` (`{"dry_run": bool}`; NDJSON of what
goes and why), `POST /api/corral/scrub` (NDJSON, one line per blob), `POST /api/corral/pin` and
`/api/corral/unpin` (`{"model": name}`). When corral listens beyond loopback the admin routes
need CORRAL_ADMIN_TOKEN (auth.auth_middleware guards every /api/corral/ route except the status
read); /metrics and /corral stay open like /api/tags.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from registry.storage.catalog import ModelNotFound
from registry.config import Settings
from registry.web.errors import ApiError
from registry.web.jsonbody import field, model_field, parse_name, read_json_object
from registry.cache.lifecycle import LIFECYCLE, Lifecycle
from registry.server.metrics import METRICS, CacheMetrics, metrics_handler
from registry.web.ndjson import stream_progress
from registry.server.services import SERVICES
from registry.mirror.responses import READERS, blob_meter
from registry.cache.status import cache_status, render_page
from runner.http.ollama import Runner


async def status_json(request: web.Request) -> web.Response:
    return web.json_response(await cache_status(request.app[LIFECYCLE]))


async def status_page(request: web.Request) -> web.Response:
    page = render_page(await cache_status(request.app[LIFECYCLE]))
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


async def prune(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request, allow_empty=True)
    dry_run = field(body, "dry_run", bool, False)
    stream = field(body, "stream", bool, True)
    return await stream_progress(request, stream, request.app[LIFECYCLE].pruner.run(dry_run))


async def scrub(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request, allow_empty=True)
    stream = field(body, "stream", bool, True)
    return await stream_progress(request, stream, request.app[LIFECYCLE].scrubber.run_pass())


async def _set_pinned(request: web.Request, pinned: bool) -> web.Response:
    services = request.app[SERVICES]
    name = parse_name(model_field(await read_json_object(request)))
    try:
        await services.catalog.set_pinned(name, pinned)
    except ModelNotFound:
        raise ApiError(404, f"model '{name.display_shortest()}' not found") from None
    return web.json_response({"model": name.display_shortest(), "pinned": pinned})


async def pin(request: web.Request) -> web.Response:
    return await _set_pinned(request, True)


async def unpin(request: web.Request) -> web.Response:
    return await _set_pinned(request, False)


def setup(app: web.Application, settings: Settings, runner: Runner) -> None:
    """Metrics, the blob meter, the routes, and the lifecycle's startup and shutdown."""
    metrics = CacheMetrics(settings.max_cache)
    readers: Counter = Counter()
    app[METRICS] = metrics
    app[READERS] = readers
    app[LIFECYCLE] = lifecycle = Lifecycle(settings, runner, metrics, readers)
    app.middlewares.append(blob_meter)
    app.add_routes([
        web.get("/metrics", metrics_handler),
        web.get("/corral", status_page),
        web.get("/api/corral/status", status_json),
        web.post("/api/corral/prune", prune),
        web.post("/api/corral/scrub", scrub),
        web.post("/api/corral/pin", pin),
        web.post("/api/corral/unpin", unpin),
    ])

    async def run(app: web.Application):
        await lifecycle.start(app[SERVICES])
        yield
        await lifecycle.stop()

    app.cleanup_ctx.append(run)
