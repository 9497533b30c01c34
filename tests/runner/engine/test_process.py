"""Runner children: each loaded model is its own process; its death costs one load, not the server.

Real children on the endless bigram model (tests/support/bigram.py), driven over HTTP with the
real ollama client; children are killed with real signals."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from runner.engine import wire
from runner.engine.engine import Completion
from runner.engine.loading import EngineSettings
from runner.engine.process import TERMINATED
from runner.options import build_options
from runner.scheduler import RunnerConfig, Scheduler
from tests.support.bigram import write_endless_gguf
from tests.support.runner import Harness, StartRunner, bigram_spec

pytestmark = pytest.mark.model

QUICK = {"temperature": 0, "num_predict": 2}


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def _wait_gone(pid: int) -> bool:
    """True once the process has ended (within 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
async def endless(start_runner: StartRunner, tmp_path: Path) -> Harness:
    return await start_runner(specs=[bigram_spec(tmp_path, "endless:latest", path=write_endless_gguf(tmp_path))])


def _pid(harness: Harness) -> int:
    (model,) = harness.runner.scheduler.loaded()
    return model.engine.pid


async def test_the_model_runs_in_a_child_process(endless: Harness) -> None:
    result = await endless.client().generate(model="endless", prompt="Hi", options=QUICK)
    assert result.eval_count == 2
    pid = _pid(endless)
    assert pid != os.getpid() and _alive(pid)
    assert _child_of_us(Path(f"/proc/{pid}"))
    await endless.runner.close()
    assert await _wait_gone(pid)


async def test_kill_9_mid_stream_ends_the_stream_and_the_next_request_loads_again(endless: Harness) -> None:
    body = {"model": "endless", "prompt": "Go on.", "options": {"temperature": 0, "num_predict": 100000}}
    async with aiohttp.ClientSession() as session, session.post(endless.url + "/api/generate", json=body) as response:
        assert json.loads(await response.content.readline())["done"] is False
        pid = _pid(endless)
        os.kill(pid, signal.SIGKILL)
        lines = [json.loads(line) async for line in response.content]
    assert lines[-1] == {"error": f"{TERMINATED}: signal: killed"}
    assert await _wait_gone(pid)
    assert (await endless.client().ps()).models == []
    again = await endless.client().generate(model="endless", prompt="Hi", options=QUICK)
    assert again.done and again.eval_count == 2
    assert _pid(endless) != pid
    assert endless.runner.stats.queue_depth == 0


async def test_a_child_dying_while_idle_is_forgotten(endless: Harness) -> None:
    await endless.client().generate(model="endless", prompt="", keep_alive=-1)
    pid = _pid(endless)
    os.kill(pid, signal.SIGKILL)
    assert await _wait_gone(pid)
    for _ in range(100):
        if not (await endless.client().ps()).models:
            break
        await asyncio.sleep(0.05)
    assert (await endless.client().ps()).models == []
    assert endless.runner.loaded_paths() == set()


async def test_requests_waiting_for_a_slot_fail_too(start_runner: StartRunner, tmp_path: Path) -> None:
    spec = bigram_spec(tmp_path, "endless:latest", path=write_endless_gguf(tmp_path))
    harness = await start_runner(RunnerConfig(num_parallel=1), [spec])
    client = harness.client()
    await client.generate(model="endless", prompt="")
    long = {"temperature": 0, "num_predict": 100000}
    first = await client.generate(model="endless", prompt="One.", options=long, stream=True)
    await anext(first)
    waiting = asyncio.create_task(client.generate(model="endless", prompt="Two.", options=QUICK))
    for _ in range(1000):
        if harness.runner.stats.queue_depth:
            break
        await asyncio.sleep(0.01)
    os.kill(_pid(harness), signal.SIGKILL)
    with pytest.raises(Exception, match=TERMINATED):
        async for _ in first:
            pass
    with pytest.raises(Exception, match=f"{TERMINATED}: signal: killed"):
        await waiting
    assert harness.runner.stats.queue_depth == 0


async def test_a_load_the_child_refuses_is_a_500_with_its_reason_and_its_log_in_ours(
    start_runner: StartRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    spec = bigram_spec(tmp_path, "broken:latest", path=write_endless_gguf(tmp_path))
    harness = await start_runner(specs=[dataclasses.replace(spec, model_path=broken)])
    async with aiohttp.ClientSession() as session:
        body = {"model": "broken", "prompt": "Hi", "stream": False}
        async with session.post(harness.url + "/api/generate", json=body) as response:
            assert response.status == 500
            assert "broken" in (await response.json())["error"]
    assert harness.runner.scheduler.loaded() == []
    relayed = [r for r in caplog.records if r.name == "runner.child"]
    assert relayed and all("broken:latest]" in r.getMessage() for r in relayed)


async def test_load_timeout_kills_the_child(start_runner: StartRunner, tmp_path: Path) -> None:
    spec = bigram_spec(tmp_path, "endless:latest", path=write_endless_gguf(tmp_path))
    harness = await start_runner(RunnerConfig(load_timeout=0.001), [spec])
    async with aiohttp.ClientSession() as session:
        body = {"model": "endless", "prompt": "Hi", "stream": False}
        async with session.post(harness.url + "/api/generate", json=body) as response:
            assert response.status == 500
            assert (await response.json())["error"] == "timed out waiting for llama runner to start"
    for pid in _our_children():
        assert await _wait_gone(pid)


def _our_children() -> list[int]:
    """Runner children of this test process, from /proc."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _child_of_us(p)]


def _child_of_us(proc: Path) -> bool:
    try:
        status = (proc / "status").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return f"PPid:\t{os.getpid()}\n" in status and b"runner.engine.child" in cmdline


def test_a_child_exits_when_the_server_end_of_its_socket_closes(tmp_path: Path) -> None:
    """The portable no-orphan rule: EOF on the socket ends the child, whatever it is doing."""
    commands, child_commands = socket.socketpair()
    events, child_events = socket.socketpair()
    theirs = (child_commands.fileno(), child_events.fileno())
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.engine.child", *map(str, theirs), str(os.getpid()), "INFO"],
        pass_fds=theirs, stderr=subprocess.PIPE,
    )
    child_commands.close()
    child_events.close()
    spec = bigram_spec(tmp_path, "endless:latest", path=write_endless_gguf(tmp_path))
    settings = {"num_ctx": 256, "num_parallel": 1, "num_batch": 512, "num_threads": 1, "gpu_layers": 0,
                "main_gpu": 0, "flash_attention": None, "use_mmap": True}
    commands.sendall(wire.encode({"op": "load", "spec": wire.spec_to_wire(spec), "settings": settings}))
    reader = events.makefile("rb")
    (length,) = wire.HEADER.unpack(reader.read(wire.HEADER.size))
    assert wire.decode(reader.read(length))["op"] == "ready"
    runaway = Completion(tokens=(1, 100, 101), options=build_options(256, {"num_predict": 10**9, "temperature": 0}))
    commands.sendall(wire.encode({"op": "complete", "id": 1, "completion": wire.completion_to_wire(runaway)}))
    (length,) = wire.HEADER.unpack(reader.read(wire.HEADER.size))
    assert wire.decode(reader.read(length))["i"] == 1  # generating
    commands.close()
    assert process.wait(timeout=10) == 0
    # its events socket closes with it, after the generation's last pieces and its failure
    assert reader.read().endswith(b'{"i":1,"e":"model was unloaded","c":500}')
    reader.close()
    events.close()


async def test_each_child_gets_the_gpus_the_scheduler_placed_it_on(tmp_path: Path) -> None:
    """No GPU here: llama.cpp loads on the CPU, but the placement is visible in each child's environment."""
    endless = write_endless_gguf(tmp_path)
    specs = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.gguf").symlink_to(endless)
        specs.append(bigram_spec(tmp_path, f"{name}:latest", path=tmp_path / f"{name}.gguf"))
    scheduler = Scheduler(RunnerConfig(gpu_devices=("4", "7")))
    settings = EngineSettings(num_ctx=256, gpu_layers=99)
    try:
        placed = []
        for spec in specs:
            async with scheduler.use(spec, settings, None) as model:
                environ = (Path("/proc") / str(model.engine.pid) / "environ").read_bytes().split(b"\0")
                placed.append((model.devices, [v for v in environ if v.startswith(b"CUDA_VISIBLE_DEVICES=")]))
        assert placed == [(("4",), [b"CUDA_VISIBLE_DEVICES=4"]), (("7",), [b"CUDA_VISIBLE_DEVICES=7"])]
    finally:
        await scheduler.close()
