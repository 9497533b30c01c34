"""HTTP face of the cache lifecycle: the status (JSON and page) and the admin routes.

`GET /api/corral/status` (JSON), `GET /corral` (the status page), and the admin routes
`POST /api/corral/prune` (`{"dry_run": bool}`; NDJSON of what goes and why),
`POST /api/corral/scrub` (NDJSON, one line per blob), `POST /api/corral/pin` and
`/api/corral/unpin` (`{"model": name}`). When corral listens beyond loopback the admin routes
need CORRAL_ADMIN_TOKEN (the access middleware guards every /api/corral/ route except the status
read); /corral stays open like /api/tags.
"""

from __future__ import annotations

from aiohttp import web

from registry.cache.page import render_page
from registry.cache.prune import Pruner
from registry.cache.scrub import Scrubber
from registry.cache.status import CacheStatus
from registry.storage.catalog import Catalog, ModelNotFound
from registry.web.errors import ApiError
from registry.web.jsonbody import field, model_field, parse_name, read_json_object
from registry.web.ndjson import stream_progress


class CacheAdmin:
    def __init__(self, status: CacheStatus, pruner: Pruner, scrubber: Scrubber, catalog: Catalog) -> None:
        self.status = status
        self.pruner = pruner
        self.scrubber = scrubber
        self.catalog = catalog

    async def status_json(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status.collect())

    async def status_page(self, request: web.Request) -> web.Response:
        page = render_page(await self.status.collect())
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def prune(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request, allow_empty=True)
        dry_run = field(body, "dry_run", bool, False)
        stream = field(body, "stream", bool, True)
        return await stream_progress(request, stream, self.pruner.run(dry_run))

    async def scrub(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request, allow_empty=True)
        stream = field(body, "stream", bool, True)
        return await stream_progress(request, stream, self.scrubber.run_pass())

    async def pin(self, request: web.Request) -> web.Response:
        return await self._set_pinned(request, True)

    async def unpin(self, request: web.Request) -> web.Response:
        return await self._set_pinned(request, False)

    async def _set_pinned(self, request: web.Request, pinned: bool) -> web.Response:
        name = parse_name(model_field(await read_json_object(request)))
        try:
            await self.catalog.set_pinned(name, pinned)
        except ModelNotFound:
            raise ApiError(404, f"model '{name.display_shortest()}' not found") from None
        return web.json_response({"model": name.display_shortest(), "pinned": pinned})
