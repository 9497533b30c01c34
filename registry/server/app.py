"""The application factory: Settings → database → store → catalogue → content → routes.

One aiohttp application serves the registry protocol (`/v2/`), ollama's management API and the
runner's inference API on one port, as ollama does. Startup migrates the database, removes
leftovers of interrupted ingests and only then accepts requests.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from aiohttp import web

from registry.server.app import airgap
from registry.library import handlers as api
from registry.cache import admin as cache_api
from registry.web import cors
from registry.mirror import v2_reads as oci
from registry.server.app import openai_bridge
from registry.mirror import pull
from registry.storage.catalog import Catalog
from registry.config import Settings
from registry.mirror.content import LocalContent
from registry.storage.db import make_engine, make_sessionmaker, upgrade_database
from registry.web.errors import (
    DISK_FULL_MESSAGE,
    ApiError,
    OciError,
    api_error_response,
    is_disk_full,
    oci_error_response,
)
from registry.mirror.fills import Fills
from registry.auth.keys import load_or_create_key
from registry.storage.leases import Leases
from registry.mirror.manifest_cache import ManifestCache
from registry.storage.contents import ModelReader
from registry.mirror.proxy import ProxyContent
from registry.server.runner_bridge import make_runner
from registry.server.services import SERVICES, Services
from registry.storage.store import BlobStore
from registry.mirror.upstream import Upstream

log = logging.getLogger("corral")
access_log = logging.getLogger("corral.access")


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Map handler exceptions to the dialect of the route; never leak a traceback."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as err:
        status = err.status
        if request.path.startswith("/v2/"):
            return oci_error_response(OciError(err.status, "UNKNOWN", err.message))
        return api_error_response(err.status, err.message)
    except OciError as err:
        status = err.status
        return oci_error_response(err)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status >= 400 and request.path.startswith("/api/"):
            return api_error_response(exc.status, exc.reason)
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = 499
        raise
    except Exception as exc:
        if is_disk_full(exc):
            status = 507
            log.error("disk full on %s %s: %s", request.method, request.path, exc)
            if request.path.startswith("/v2/"):
                return oci_error_response(OciError(507, "UNAVAILABLE", DISK_FULL_MESSAGE))
            return api_error_response(507, DISK_FULL_MESSAGE)
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/v2/"):
            return oci_error_response(OciError(500, "UNKNOWN", "internal server error"))
        return api_error_response(500, "internal server error")
    finally:
        access_log.info("%s %s %d %.1fms", request.method, request.path_qs, status,
                        (time.perf_counter() - start) * 1000)


async def build_services(settings: Settings) -> Services:
    await upgrade_database(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    store = BlobStore(settings.blobs_dir)
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    for stray in store.stray_temp_files():
        stray.unlink(missing_ok=True)
        log.info("removed leftover of an interrupted ingest: %s", stray.name)
    leases = Leases()
    catalog = Catalog(sessions, store, leases)
    upstream = Upstream(settings, await asyncio.to_thread(load_or_create_key, settings.key_path))
    manifests = ManifestCache(catalog, upstream, settings)
    fills = Fills(store, catalog, sessions, upstream)
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=store,
        catalog=catalog,
        content=ProxyContent(LocalContent(catalog), manifests, fills, upstream),
        model_reader=ModelReader(store),
        upstream=upstream,
        manifests=manifests,
        fills=fills,
        leases=leases,
    )


def create_app(settings: Settings) -> web.Application:
    """Build the application; resources are created in the startup hook and closed on cleanup."""
    app = web.Application(middlewares=[error_middleware, *cors.middlewares(settings)], client_max_size=1024**2 * 16)
    app.on_response_prepare.append(cors.add_cors_headers)
    app.add_routes(oci.routes())
    app.add_routes(api.routes())
    app.add_routes(pull.routes())
    runner = make_runner(app, settings)
    app.add_routes(runner.routes())
    openai_bridge.setup(app, runner)

    async def lifecycle(app: web.Application):
        app[SERVICES] = await build_services(settings)
        try:
            yield
        finally:
            await runner.close()
            await app[SERVICES].fills.close()
            await app[SERVICES].upstream.close()
            await app[SERVICES].engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    airgap.setup(app, settings)
    cache_api.setup(app, settings, runner)
    return app


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


def configure_logging(settings: Settings) -> None:
    level = logging.INFO if settings.debug == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.debug == 0:
        access_log.setLevel(logging.WARNING)


def serve(settings: Settings) -> None:
    configure_logging(settings)
    if settings.needs_admin_token and not settings.admin_token:
        log.warning("listening beyond loopback without CORRAL_ADMIN_TOKEN: admin and write routes are refused")
    web.run_app(
        create_app(settings),
        host=settings.host.host or None,
        port=settings.host.port,
        ssl_context=ssl_context(settings),
        print=lambda *_: log.info("corral listening on %s", settings.host.url),
        access_log=None,
    )
