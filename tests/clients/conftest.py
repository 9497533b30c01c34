"""One real corral for the client suites: SmolLM2 created with the CLI, plus a tool-capable copy,
and the scripted bigram model (tests/support/bigram.py) for the tests that read the answer, plus
a thinking copy of it.

Started once per session (loading and creating the model is the slow part); tests that change
the catalogue use names of their own. Servers run with a 1024-token context to keep the 2-core
CI machine quick; each test asks for a handful of tokens at most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.clients.toolmodel import TOOLS_TEMPLATE
from tests.support.bigram import THINKING_TEMPLATE, write_scripted_gguf
from tests.support.models import write_modelfile
from tests.support.server import ServerProcess, free_port, run_cli, start_server

SERVER_ENV = {"OLLAMA_CONTEXT_LENGTH": "1024"}
MODEL = "smollm2"
TOOLS_MODEL = "smollm2-tools"
SCRIPTED_MODEL = "bigram"
THINKING_MODEL = "bigram-thinking"


@pytest.fixture(scope="session")
def push_target_port() -> int:
    """Where a test starts a corral to push to: the session server lists it in CORRAL_ALLOWED_HOSTS."""
    return free_port()


@pytest.fixture(scope="session")
def corral(tmp_path_factory: pytest.TempPathFactory, push_target_port: int) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("corral-clients")
    server = start_server(root, extra_env={**SERVER_ENV, "CORRAL_ALLOWED_HOSTS": f"127.0.0.1:{push_target_port}"})
    try:
        created = run_cli(server, "create", MODEL, "-f", str(write_modelfile(root)))
        assert created.returncode == 0, created.stderr
        bigram = write_modelfile(root, source=write_scripted_gguf(root), name="Modelfile.bigram")
        created = run_cli(server, "create", SCRIPTED_MODEL, "-f", str(bigram))
        assert created.returncode == 0, created.stderr
        for name, source, template in ((TOOLS_MODEL, MODEL, TOOLS_TEMPLATE),
                                       (THINKING_MODEL, SCRIPTED_MODEL, THINKING_TEMPLATE)):
            response = httpx.post(
                server.url + "/api/create",
                json={"model": name, "from": source, "template": template, "stream": False},
                timeout=120,
            )
            assert response.status_code == 200, response.text
        yield server
    finally:
        server.stop()


@pytest.fixture
def mirror(tmp_path: Path, corral: ServerProcess) -> Iterator[Callable[[], ServerProcess]]:
    """Factory for an empty corral whose upstream is the session server (a pull-through mirror)."""
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        env = {**SERVER_ENV, "CORRAL_UPSTREAM": corral.url, "CORRAL_OFFLINE": "0"}
        server = start_server(tmp_path / f"mirror{len(started)}", extra_env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def release_tools_model(corral: ServerProcess) -> Iterator[None]:
    """Unload the tool model after a module that used it: it shares SmolLM2's weights, so while it
    stays loaded SmolLM2's requests run on its runner and /api/ps names that runner after it (as
    ollama's does), which the modules after this one do not expect."""
    yield
    response = httpx.post(corral.url + "/api/generate", json={"model": TOOLS_MODEL, "keep_alive": 0}, timeout=60)
    assert response.status_code == 200, response.text
