"""A real `corral serve` whose models run in runner children: a child's death leaves the mirror
serving, SIGTERM stops everything within seconds even mid-generation, and no child outlives the
server, even one killed with SIGKILL. The model is the endless bigram model (it talks until
num_predict stops it), created with the CLI like a user would."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.bigram import write_endless_gguf
from tests.support.models import write_modelfile
from tests.support.server import ServerProcess, run_cli, start_server

pytestmark = pytest.mark.model

TERMINATED = "llama runner process has terminated"
RUNAWAY = {"model": "endless", "prompt": "Go on.", "options": {"temperature": 0, "num_predict": 10_000_000}}


def _children(parent: int) -> list[int]:
    """Runner children of a process, from /proc (zombies excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"PPid:\t{parent}\n" in status and b"runner.engine.child" in cmdline and "State:\tZ" not in status:
            found.append(int(proc.name))
    return found


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def corral(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path, extra_env={"OLLAMA_CONTEXT_LENGTH": "256"})
    try:
        modelfile = write_modelfile(tmp_path, source=write_endless_gguf(tmp_path), name="Modelfile.endless")
        created = run_cli(server, "create", "endless", "-f", str(modelfile))
        assert created.returncode == 0, created.stderr
        yield server
    finally:
        server.stop()


def _start_runaway(server: ServerProcess, client: httpx.Client) -> tuple[httpx.Response, Iterator[str]]:
    """A generation that would run for hours, already streaming: the response and its lines."""
    response = client.send(client.build_request("POST", server.url + "/api/generate", json=RUNAWAY), stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    assert json.loads(next(lines))["done"] is False
    return response, lines


def test_a_killed_child_ends_its_stream_and_the_mirror_keeps_serving(corral: ServerProcess) -> None:
    with httpx.Client(timeout=60) as client:
        response, lines = _start_runaway(corral, client)
        (child,) = _children(corral.process.pid)
        os.kill(child, signal.SIGKILL)
        last = json.loads(list(lines)[-1])
        response.close()
        assert last == {"error": f"{TERMINATED}: signal: killed"}
        assert _gone(child)

        assert client.get(corral.url + "/api/ps").json()["models"] == []
        assert [m["name"] for m in client.get(corral.url + "/api/tags").json()["models"]] == ["endless:latest"]
        manifest = client.get(
            corral.url + "/v2/library/endless/manifests/latest",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        ).json()
        digest = manifest["layers"][0]["digest"]
        blob = client.get(corral.url + f"/v2/library/endless/blobs/{digest}")
        assert blob.status_code == 200 and "sha256:" + hashlib.sha256(blob.content).hexdigest() == digest

        short = {**RUNAWAY, "stream": False, "options": {"num_predict": 3}}
        again = client.post(corral.url + "/api/generate", json=short)
        assert again.status_code == 200 and again.json()["eval_count"] == 3
        (new_child,) = _children(corral.process.pid)
        assert new_child != child
    assert f"runner {child} for endless:latest ended: signal: killed" in corral.log()


def test_sigterm_stops_the_server_mid_generation_and_leaves_no_child(corral: ServerProcess) -> None:
    with httpx.Client(timeout=60) as client:
        response, _lines = _start_runaway(corral, client)
        (child,) = _children(corral.process.pid)
        started = time.monotonic()
        corral.process.send_signal(signal.SIGTERM)
        assert corral.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 8
        response.close()
    assert _gone(child)


def test_a_sigkilled_server_leaves_no_child(corral: ServerProcess) -> None:
    with httpx.Client(timeout=60) as client:
        response, _lines = _start_runaway(corral, client)
        (child,) = _children(corral.process.pid)
        corral.process.kill()
        corral.process.wait(timeout=15)
        response.close()
    assert _gone(child)


# A request's own template that runs until its execution bounds stop it (tens of seconds of CPU):
# eight calls per iteration reach the step bound long before the range bound.
SLOW_TEMPLATE = "{{ range $i := 999999 }}" + '{{ len "a" }}' * 8 + "{{ end }}"


def test_sigterm_stops_the_server_while_a_template_renders(corral: ServerProcess) -> None:
    """Python cannot stop a thread: the render must not be one the interpreter waits for at exit."""
    body = {**RUNAWAY, "template": SLOW_TEMPLATE, "stream": False}
    with httpx.Client(timeout=60) as client:
        client.post(corral.url + "/api/generate", json={"model": "endless"})  # loaded: the render starts at once
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, corral.url + "/api/generate", json=body)
            time.sleep(1.0)  # the render is running (it takes far longer than this)
            started = time.monotonic()
            corral.process.send_signal(signal.SIGTERM)
            assert corral.process.wait(timeout=30) == 0
            assert time.monotonic() - started < 8
            with contextlib.suppress(httpx.HTTPError):
                pending.result()
