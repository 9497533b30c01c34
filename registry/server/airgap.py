"""Wires push, bundles, ollama-folder import and access control into the application.

One call from server.create_app: the auth middleware (registry tokens for `/v2` writes, the admin
token for `/api` writes beyond loopback), the token endpoint, the `/v2` upload and manifest
write routes, `/api/push`, corral's import/export routes, and a janitor that removes upload
sessions idle longer than CORRAL_UPLOAD_TIMEOUT.

Throwaway glue for the airgap-di branch only: the composition root (server/app.py with one route
table) replaces this module. Until then the handler objects, which need the services built at
startup, are built in a startup hook and the routes delegate to them through `_lazy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from registry.airgap.bundle import Bundles
from registry.airgap.ollama_import import OllamaFolderImport
from registry.airgap.push import PushHandler
from registry.airgap.v2_writes import V2Writes
from registry.auth.access import TOKEN_PATH, Authenticator
from registry.config import Settings
from registry.server.services import SERVICES
from registry.storage.uploads import UploadStore

log = logging.getLogger("corral.uploads")

JANITOR_MAX_INTERVAL = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Handlers:
    v2: V2Writes
    push: PushHandler
    bundles: Bundles
    ollama: OllamaFolderImport


HANDLERS: web.AppKey[_Handlers] = web.AppKey("airgap_handlers", _Handlers)


def setup(app: web.Application, settings: Settings) -> None:
    auth = Authenticator(settings)
    uploads = UploadStore(settings.scratch_dir / "uploads", settings.max_upload, settings.upload_timeout)

    async def build(app: web.Application) -> None:
        services = app[SERVICES]
        app[HANDLERS] = _Handlers(
            v2=V2Writes(uploads, services.store, services.catalog, services.content, settings.upstream_host),
            push=PushHandler(services.catalog, services.store, settings.key_path),
            bundles=Bundles(services.catalog, services.store, services.leases, settings.key_path,
                            settings.authorized_keys_path, settings.require_signed, settings.scratch_dir),
            ollama=OllamaFolderImport(services.catalog, services.store),
        )

    def _lazy(pick: Callable[[_Handlers], Handler]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await pick(app[HANDLERS])(request)
        return handler

    app.on_startup.append(build)
    app.middlewares.append(auth.middleware)
    repo = r"/v2/{ns:[^/]+}/{model:[^/]+}"
    session = repo + r"/blobs/uploads/{upload_id:[0-9a-f]{32}}"
    app.add_routes([
        web.get(TOKEN_PATH, auth.token),
        web.post(repo + "/blobs/uploads/", _lazy(lambda h: h.v2.start_upload)),
        web.post(repo + "/blobs/uploads", _lazy(lambda h: h.v2.start_upload)),
        web.get(session, _lazy(lambda h: h.v2.upload_status), allow_head=False),
        web.patch(session, _lazy(lambda h: h.v2.patch_upload)),
        web.put(session, _lazy(lambda h: h.v2.finish_upload)),
        web.delete(session, _lazy(lambda h: h.v2.cancel_upload)),
        web.put(repo + "/manifests/{reference}", _lazy(lambda h: h.v2.put_manifest)),
        web.delete(repo + "/manifests/{reference}", _lazy(lambda h: h.v2.delete_manifest)),
        web.post("/api/push", _lazy(lambda h: h.push.push)),
        web.post("/api/corral/export", _lazy(lambda h: h.bundles.export)),
        web.post("/api/corral/import", _lazy(lambda h: h.bundles.import_bundle)),
        web.post("/api/corral/import/ollama", _lazy(lambda h: h.ollama.import_folder)),
    ])
    app.cleanup_ctx.append(_janitor(uploads))


def _janitor(uploads: UploadStore) -> Callable[[web.Application], AsyncIterator[None]]:
    interval = min(JANITOR_MAX_INTERVAL, max(uploads.timeout / 2, 0.5))

    async def janitor(app: web.Application) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                for upload_id in await uploads.expire():
                    log.info("removed upload %s, idle longer than %ss", upload_id, uploads.timeout)
                await asyncio.sleep(interval)

        task = asyncio.create_task(sweep())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return janitor
