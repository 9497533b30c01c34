"""Start a real `corral serve` process on a free loopback port and stop it afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.bigram import write_endless_gguf, write_scripted_gguf
from tests.support.models import write_modelfile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    port: int
    root: Path
    process: subprocess.Popen
    log_path: Path

    @property
    def host_env(self) -> dict[str, str]:
        return {"OLLAMA_HOST": f"127.0.0.1:{self.port}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def base_env(root: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(root / "models"),
        "CORRAL_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'corral.db'}",
        "CORRAL_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def start_server(root: Path, extra_env: dict[str, str] | None = None, port: int | None = None,
                 timeout: float = 60, command: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None) -> ServerProcess:
    """`command` (default: this interpreter's corral) with `env` (default: base_env), which must
    then name the port in OLLAMA_HOST."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / f"server-{port}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        list(command or [sys.executable, "-m", "registry.cli", "serve"]),
        env=dict(env) if env is not None else base_env(root, port, extra_env), stdout=log, stderr=subprocess.STDOUT,
    )
    server = ServerProcess(f"http://127.0.0.1:{port}", port, root, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"corral exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/api/version", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"corral did not start within {timeout}s:\n{server.log()}")


def run_cli(server: ServerProcess, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "registry.cli", *args],
        env=base_env(server.root, server.port), capture_output=True, text=True, timeout=timeout,
    )


@contextmanager
def serving(root: Path, extra_env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A `corral serve` process for a fixture's lifetime, stopped however the fixture ends."""
    server = start_server(root, extra_env)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def serving_scripted_models(root: Path) -> Iterator[ServerProcess]:
    """A server holding the scripted bigram model as `bigram` and the endless one as `endless`,
    created as a user would (`corral create`), with a small context so prompts overflow it."""
    with serving(root, {"OLLAMA_CONTEXT_LENGTH": "256"}) as server:
        for name, gguf in (("bigram", write_scripted_gguf(root)), ("endless", write_endless_gguf(root))):
            modelfile = write_modelfile(root, source=gguf, name=f"Modelfile.{name}")
            created = run_cli(server, "create", name, "-f", str(modelfile))
            assert created.returncode == 0, created.stderr
        yield server


def wait_until(check: Callable[[], object], timeout: float = 60) -> None:
    """Poll `check` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
