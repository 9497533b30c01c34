"""Wires push, bundles, ollama-folder import and access control into the application.

One call from server.create_app: the auth middleware (registry tokens for `/v2` writes, the admin
token for `/api` writes beyond loopback), the token endpoint, the `/v2` upload and manifest
write routes, `/api/push`, corral's import/export routes, and a janitor that removes upload
sessions idle longer than CORRAL_UPLOAD_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from registry.server.airgap import bundle
from registry.server.airgap import v2_writes as oci_write
from registry.server.airgap import ollama_import
from registry.server.airgap import push
from registry.auth.access import AUTH, TOKEN_PATH, Authenticator, auth_middleware, token_handler
from registry.config import Settings
from registry.airgap.v2_writes import UPLOADS
from registry.storage.uploads import UploadStore

log = logging.getLogger("corral.uploads")

JANITOR_MAX_INTERVAL = 60.0


def setup(app: web.Application, settings: Settings) -> None:
    app[AUTH] = Authenticator(settings)
    app[UPLOADS] = UploadStore(settings.scratch_dir / "uploads", settings.max_upload, settings.upload_timeout)
    app.middlewares.append(auth_middleware)
    app.add_routes([
        web.get(TOKEN_PATH, token_handler),
        *oci_write.routes(),
        web.post("/api/push", push.push_handler),
        web.post("/api/corral/export", bundle.export_handler),
        web.post("/api/corral/import", bundle.import_handler),
        web.post("/api/corral/import/ollama", ollama_import.import_ollama_handler),
    ])
    app.cleanup_ctx.append(_janitor)


async def _janitor(app: web.Application) -> AsyncIterator[None]:
    uploads = app[UPLOADS]
    interval = min(JANITOR_MAX_INTERVAL, max(uploads.timeout / 2, 0.5))

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
