"""The seam between registry and runner: settings → RunnerConfig, names → ModelSpec.

The runner never reads the database or the store layout; it receives a resolver that turns a
model name into a ModelSpec built from the manifest, and records each use for LRU pruning.
"""

from __future__ import annotations

from aiohttp import web

from registry.config import Settings
from registry.model.names import InvalidNameError, ModelName
from registry.server.services import SERVICES
from runner.http.ollama import Runner
from runner.scheduler import RunnerConfig
from runner.spec import ModelNotFoundError, ModelSpec


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
    )


def make_runner(app: web.Application, settings: Settings) -> Runner:
    """Create the runner with a resolver that reads the app's services once they exist."""

    async def resolve(text: str) -> ModelSpec:
        services = app[SERVICES]
        try:
            name = ModelName.parse(text)
        except InvalidNameError:
            raise ModelNotFoundError(f"model '{text}' not found") from None
        record = await services.catalog.get(name)
        if record is None:
            raise ModelNotFoundError(f"model '{text}' not found")
        contents = await services.model_reader.read(record)
        await services.catalog.touch(name)
        return contents.to_spec()

    return Runner(runner_config(settings), resolve)
