"""The composition root: Settings → parts (`build_services`) → handler objects → one route table.

One aiohttp application serves the registry protocol (`/v2/`), ollama's management API and the
runner's inference API on one port, as ollama does. The application is built asynchronously
(`create_app` is a coroutine), so every part exists before a route is made and each handler
object receives exactly what it uses. `serve` listens on the port before building anything, then
the parts take the store; startup reconciles the store with the catalogue before the first
request; shutdown stops background work, closes the parts, and lets go of the store last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from registry.airgap.bundle import Bundles
from registry.airgap.ollama_import import OllamaFolderImport
from registry.airgap.push import PushHandler
from registry.airgap.v2_writes import V2Writes
from registry.auth.access import Authenticator
from registry.cache.admin import CacheAdmin
from registry.cache.status import CacheStatus
from registry.config import Settings
from registry.library.cloud import CloudStatus
from registry.library.create import ModelCreator
from registry.library.handlers import LibraryHandlers
from registry.mirror.v2_listing import V2Listing
from registry.mirror.v2_reads import V2Reads
from registry.server.access import AccessLogger, RequestCounts, access_log
from registry.server.event_loop import EventLoopUnavailable, loop_factory
from registry.server.listen import ListenError, listen
from registry.server.logs import configure_logging
from registry.server.metrics import Metrics
from registry.server.middleware import error_middleware
from registry.server.routes import Handlers, route_table
from registry.server.runner_bridge import check_template, make_openai_routes, runner_status
from registry.server.services import SERVICES, Services, build_services
from registry.storage.owner import CatalogueInUse
from registry.storage.shared_store import NotTheSharedStore
from registry.storage.store_lock import StoreInUse
from registry.storage.uploads import UploadStore
from registry.web import cors
from runner.http.anthropic import AnthropicRoutes
from runner.http.responses import ResponsesRoutes

log = logging.getLogger("corral")
uploads_log = logging.getLogger("corral.uploads")

JANITOR_MAX_INTERVAL = 60.0


def build_handlers(services: Services, requests: RequestCounts) -> Handlers:
    s = services
    settings = s.settings
    return Handlers(
        library=LibraryHandlers(s.catalog, s.store, s.model_reader,
                                ModelCreator(s.catalog, s.store, s.model_reader, s.puller, check_template),
                                settings.max_upload),
        cloud=CloudStatus(settings.no_cloud),
        v2_reads=V2Reads(s.content, s.presigned if settings.pull_auth else None),
        v2_listing=V2Listing(s.catalog),
        v2_writes=V2Writes(s.uploads, s.store, s.catalog),
        auth=Authenticator(settings, s.presigned, s.grants),
        pull=s.puller,
        push=PushHandler(s.catalog, s.store, settings.key_path, s.egress),
        bundles=Bundles(s.catalog, s.store, s.leases, settings.key_path, settings.authorized_keys_path,
                        settings.require_signed, settings.scratch_dir),
        ollama_import=OllamaFolderImport(s.catalog, s.store),
        cache=CacheAdmin(
            CacheStatus(settings, s.lifecycle, s.catalog, s.in_flight, s.blob_meter.readers, s.counters,
                        s.upstream.health, lambda: runner_status(s.runner), s.ownership.node),
            s.lifecycle.pruner, s.lifecycle.scrubber, s.catalog,
        ),
        metrics=Metrics(s.counters, s.fills, s.upstream, s.blob_meter.readers, s.runner, requests, s.store.root),
        runner=s.runner,
        openai=make_openai_routes(s.runner, s.catalog),
        responses=ResponsesRoutes(s.runner.service),
        anthropic=AnthropicRoutes(s.runner.service),
    )


async def create_app(settings: Settings) -> web.Application:
    """Build every part, then the application that serves them."""
    services = await build_services(settings)
    requests = RequestCounts()
    handlers = build_handlers(services, requests)
    app = web.Application(
        middlewares=[
            requests.middleware,
            error_middleware,
            *cors.middlewares(settings),
            handlers.openai.middleware,
            handlers.anthropic.middleware,  # inside OpenAI's: /v1/messages answers in its own shape
            handlers.auth.middleware,
            services.blob_meter.middleware,
        ],
        client_max_size=1024**2 * 16,
    )
    app.on_response_prepare.append(cors.add_cors_headers)
    app.add_routes(route_table(handlers))
    app[SERVICES] = services
    app.cleanup_ctx.append(_running(services))
    # on_shutdown runs before aiohttp waits (up to 60 s) for running handlers: stopping the runner
    # children first ends their generations, so a runaway request cannot hold up SIGTERM
    app.on_shutdown.append(lambda _app: services.runner.close())
    return app


def _running(services: Services):
    """Startup and shutdown: reconcile and background work while the app runs, every part closed after."""

    async def run(_app: web.Application) -> AsyncIterator[None]:
        try:
            await services.lifecycle.start()
            janitor = asyncio.create_task(_expire_uploads(services.uploads), name="corral upload janitor")
            try:
                yield
            finally:
                janitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await janitor
                await services.lifecycle.stop()
        finally:
            try:
                await services.runner.close()
                await services.fills.close()
                await services.upstream.close()
                await services.engine.dispose()
            finally:
                await services.ownership.release()

    return run


async def _expire_uploads(uploads: UploadStore) -> None:
    """Remove upload sessions idle longer than CORRAL_UPLOAD_TIMEOUT."""
    interval = min(JANITOR_MAX_INTERVAL, max(uploads.timeout / 2, 0.5))
    while True:
        for upload_id in await uploads.expire():
            uploads_log.info("removed upload %s, idle longer than %ss", upload_id, uploads.timeout)
        await asyncio.sleep(interval)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


def serve(settings: Settings) -> int:
    """Run the server until SIGINT or SIGTERM; return the exit status.

    The port is taken first, then the store (`build_services`), so a server that cannot have
    either stops before changing anything, with one line on stderr instead of a traceback.
    """
    configure_logging(settings)
    tls = ssl_context(settings)
    try:
        loop_name, new_loop = loop_factory(settings.event_loop)
    except EventLoopUnavailable as exc:
        return _refuse(exc)
    try:
        sockets = listen(settings.host)
    except ListenError as exc:
        return _refuse(exc)
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(_serve(settings, sockets, tls, loop_name))
    except (StoreInUse, CatalogueInUse, NotTheSharedStore) as exc:
        return _refuse(exc)
    finally:
        for sock in sockets:
            sock.close()


def _refuse(exc: Exception) -> int:
    print(f"corral: {exc}", file=sys.stderr)
    return 1


async def _serve(settings: Settings, sockets: list[socket.socket], tls: ssl.SSLContext | None,
                 loop_name: str) -> int:
    """Build, start and serve the app on the bound sockets; 1 if another server took the catalogue."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = await create_app(settings)
    lost = app[SERVICES].ownership.lost
    if settings.needs_admin_token and not settings.admin_token:
        log.warning("listening beyond loopback without CORRAL_ADMIN_TOKEN: admin and write routes are refused")
    runner = web.AppRunner(app, access_log=access_log, access_log_class=AccessLogger)
    try:
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=tls).start()
        log.info("corral listening on %s (event loop: %s)", settings.host.url, loop_name)
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
    finally:
        await runner.cleanup()
    return 1 if lost.is_set() else 0
