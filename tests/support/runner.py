"""The runner on its own, for tests: SmolLM2 and scripted bigram specs built by hand and an in-process server with only
the runner's routes, resolved from a dict, driven with the real `ollama` client.

The fixtures are re-exported by the conftest of each test package that drives a runner (the
runner's own tests and the CLI's `ps`/`stop` tests)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import ollama
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from registry.server.routes import inference_routes
from runner.http.ollama import Runner
from runner.scheduler import RunnerConfig
from runner.spec import ModelNotFoundError, ModelSpec
from tests.support.bigram import write_scripted_gguf
from tests.support.models import CHATML_TEMPLATE, smollm2_gguf

SMALL_CTX = 256  # keeps KV caches and prompt truncation cheap on a 2-core machine


def gguf_header(path: Path) -> dict[str, Any]:
    """GGUF header key/values without the big token arrays, as the registry's resolver gives them."""
    reader = gguf.GGUFReader(path)
    return {
        name: field.contents()
        for name, field in reader.fields.items()
        if not name.startswith("GGUF.") and not (isinstance(field.contents(), list) and len(field.contents()) > 64)
    }


@functools.cache
def smollm2_metadata() -> dict[str, Any]:
    return gguf_header(smollm2_gguf())


def _chatml_spec(name: str, digest_hex: str, path: Path, model_type: str, file_type: str,
                 header: dict[str, Any]) -> ModelSpec:
    return ModelSpec(
        name=name,
        qualified_name=f"registry.ollama.ai/library/{name}",
        digest=digest_hex * 64,
        model_path=path,
        size=path.stat().st_size,
        template=CHATML_TEMPLATE,
        # Greedy by default: tests that read the answer (the CLI's) must not depend on sampling luck.
        params={"stop": ["<|im_start|>", "<|im_end|>"], "num_ctx": SMALL_CTX, "temperature": 0},
        config={"model_family": "llama", "model_format": "gguf", "model_type": model_type, "file_type": file_type},
        gguf=header,
    )


def smollm2_spec(name: str = "smollm2:latest", path: Path | None = None, **changes: Any) -> ModelSpec:
    path = path or smollm2_gguf()
    return dataclasses.replace(_chatml_spec(name, "0", path, "135M", "Q4_1", smollm2_metadata()), **changes)


def bigram_spec(directory: Path, name: str = "bigram:latest", path: Path | None = None, **changes: Any) -> ModelSpec:
    """A bigram model (tests/support/bigram.py; the scripted one unless `path` names another), for
    tests that read the answer or need to know how long it is."""
    path = path or write_scripted_gguf(directory)
    return dataclasses.replace(_chatml_spec(name, "1", path, "bigram", "F32", gguf_header(path)), **changes)


@dataclass
class Harness:
    """A running runner: its HTTP base URL, the Runner object, and the specs it can resolve."""

    url: str
    runner: Runner
    specs: dict[str, ModelSpec]

    def client(self) -> ollama.AsyncClient:
        return ollama.AsyncClient(host=self.url)


def _full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


StartRunner = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start_runner(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> StartRunner:
    """Start a runner with the given config and models (SmolLM2 as "smollm2:latest" by default)."""

    async def start(config: RunnerConfig | None = None, specs: list[ModelSpec] | None = None) -> Harness:
        known = {spec.name: spec for spec in (specs if specs is not None else [smollm2_spec()])}

        async def resolve(name: str) -> ModelSpec:
            try:
                return known[_full_name(name)]
            except KeyError:
                raise ModelNotFoundError(name) from None

        runner = Runner(config or RunnerConfig(), resolve)
        app = web.Application()
        app.add_routes(inference_routes(runner))

        async def close_runner(_app: web.Application) -> None:
            await runner.close()

        app.on_cleanup.append(close_runner)
        server = await aiohttp_server(app)
        return Harness(url=str(server.make_url("")).rstrip("/"), runner=runner, specs=known)

    return start


@pytest.fixture
async def harness(start_runner: StartRunner) -> Harness:
    return await start_runner()


@pytest.fixture
async def scripted(start_runner: StartRunner, tmp_path: Path) -> Harness:
    """A runner serving the scripted bigram model as "bigram": its answers are known in advance."""
    return await start_runner(specs=[bigram_spec(tmp_path)])
