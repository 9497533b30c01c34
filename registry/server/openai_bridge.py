"""Mounts the runner's OpenAI-compatible /v1 API, giving it the model list from the catalogue.

The runner must not import the registry, so /v1/models gets two small callables instead: the
local models in /api/tags order, and one model by the name a client typed. As in ollama's
ToListCompletion/ToModel, `id` is the shortest display name (or the name as typed), `created`
the tag's modification time in unix seconds and `owned_by` the name's namespace.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry.model.names import InvalidNameError, ModelName
from registry.server.services import SERVICES
from runner.http.ollama import Runner
from runner.http.openai import OpenAIRoutes


def setup(app: web.Application, runner: Runner) -> None:
    """Add the /v1 routes and their error middleware (innermost, so it sees every /v1 failure)."""

    async def list_models() -> list[dict[str, Any]]:
        records = await app[SERVICES].catalog.list_models()
        return [
            {"id": r.name.display_shortest(), "created": int(r.modified_at), "owned_by": r.name.namespace}
            for r in records
        ]

    async def find_model(text: str) -> dict[str, Any] | None:
        try:
            name = ModelName.parse(text)
        except InvalidNameError:
            return None
        record = await app[SERVICES].catalog.get(name)
        if record is None:
            return None
        return {"id": text, "created": int(record.modified_at), "owned_by": name.namespace}

    routes = OpenAIRoutes(runner.service, list_models, find_model)
    app.middlewares.append(routes.middleware)
    app.add_routes(routes.routes())
