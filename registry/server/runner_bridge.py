"""The seam between registry and runner: settings → RunnerConfig, names → ModelSpec, models → /v1/models,
the runner's state for the status page, and its template parser for `/api/create`.

The runner never reads the database or the store layout, and never imports the registry: it
receives a resolver that turns a model name into a ModelSpec built from the manifest (recording
each use for LRU pruning), and, for the OpenAI-compatible /v1/models, two small callables: the
local models in /api/tags order, and one model by the name a client typed. As in ollama's
ToListCompletion/ToModel, `id` is the shortest display name (or the name as typed), `created`
the tag's modification time in unix seconds and `owned_by` the name's namespace.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from registry.config import Settings
from registry.model.names import InvalidNameError, ModelName
from registry.storage.catalog import Catalog
from registry.storage.contents import ModelReader
from registry.units import format_processor
from runner.http.ollama import Runner
from runner.http.openai import OpenAIRoutes
from runner.scheduler import RunnerConfig
from runner.spec import ModelNotFoundError, ModelSpec
from runner.template.template import Template


def runner_config(settings: Settings) -> RunnerConfig:
    return RunnerConfig(
        keep_alive=settings.keep_alive,
        max_loaded_models=settings.max_loaded_models,
        num_parallel=settings.num_parallel,
        max_queue=settings.max_queue,
        context_length=settings.context_length,
        flash_attention=settings.flash_attention,
        llm_library=settings.llm_library,
        max_vram=settings.max_vram,
        load_timeout=settings.load_timeout,
        gpu_devices=visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES", "")),
    )


def visible_gpus(value: str) -> tuple[str, ...]:
    """The GPUs the server was given (CUDA_VISIBLE_DEVICES, as CUDA reads it), for the scheduler to
    hand out to runner children; unset or empty leaves each child seeing what the server sees."""
    return tuple(device.strip() for device in value.split(",") if device.strip())


def check_template(text: str) -> None:
    """Parse a Go template as the runner will when the model is used (ollama's template.Parse);
    a template that does not parse raises the parser's TemplateError, a ValueError."""
    Template.parse(text)


def make_runner(settings: Settings, catalog: Catalog, model_reader: ModelReader) -> Runner:
    async def resolve(text: str) -> ModelSpec:
        try:
            name = ModelName.parse(text)
        except InvalidNameError:
            raise ModelNotFoundError(f"model '{text}' not found") from None
        record = await catalog.get(name)
        if record is None:
            raise ModelNotFoundError(f"model '{text}' not found")
        contents = await model_reader.read(record)
        await catalog.touch(name)
        return contents.to_spec()

    return Runner(runner_config(settings), resolve)


def make_openai_routes(runner: Runner, catalog: Catalog) -> OpenAIRoutes:
    async def list_models() -> list[dict[str, Any]]:
        records = await catalog.list_models()
        return [
            {"id": r.name.display_shortest(), "created": int(r.modified_at), "owned_by": r.name.namespace}
            for r in records
        ]

    async def find_model(text: str) -> dict[str, Any] | None:
        try:
            name = ModelName.parse(text)
        except InvalidNameError:
            return None
        record = await catalog.get(name)
        if record is None:
            return None
        return {"id": text, "created": int(record.modified_at), "owned_by": name.namespace}

    return OpenAIRoutes(runner.service, list_models, find_model)


def runner_status(runner: Runner) -> dict[str, Any]:
    """The loaded models as `ollama ps` shows them (size, processor, until) and the queue depth."""
    models = [
        {"name": m["name"], "size": m["size"], "size_vram": m["size_vram"],
         "processor": format_processor(m["size"], m["size_vram"]),
         "expires_at": datetime.fromisoformat(m["expires_at"]).timestamp()}
        for m in runner.service.ps()["models"]
    ]
    return {"models": models, "queue_depth": runner.stats.queue_depth}
