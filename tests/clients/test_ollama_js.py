"""The official ollama JavaScript client (npm `ollama`, installed by scripts/bootstrap into
tests/clients/js), run with node against corral: list, streamed chat, generate, embed, pull."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import MODEL, SCRIPTED_MODEL
from tests.support.bigram import ANSWER
from tests.support.server import ServerProcess

pytestmark = pytest.mark.model

JS_DIR = Path(__file__).parent / "js"


def run_scenario(scenario: str, host: str, model: str = MODEL) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is required for the JavaScript client tests (scripts/bootstrap installs it)"
    assert (JS_DIR / "node_modules" / "ollama").is_dir(), "run scripts/bootstrap to install the npm client"
    done = subprocess.run([node, "scenario.mjs", scenario, host, model], cwd=JS_DIR,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_list(corral: ServerProcess) -> None:
    result = run_scenario("list", corral.url)
    assert "smollm2:latest" in result["names"]
    assert set(result["families"]) == {"llama"}


def test_chat_streamed(corral: ServerProcess) -> None:
    result = run_scenario("chat-stream", corral.url, SCRIPTED_MODEL)
    assert result["chunks"] >= 2 and result["content"] == ANSWER
    assert result["roles"] == ["assistant"]
    assert result["done"] == [False] * (result["chunks"] - 1) + [True]
    assert result["done_reason"] == "stop" and 0 < result["eval_count"] <= 8


def test_generate(corral: ServerProcess) -> None:
    result = run_scenario("generate", corral.url, SCRIPTED_MODEL)
    assert (result["done"], result["response"], result["done_reason"]) == (True, ANSWER, "stop")


def test_embed(corral: ServerProcess) -> None:
    assert run_scenario("embed", corral.url) == {"model": MODEL, "count": 2, "length": 576}


def test_pull_progress(mirror: Callable[[], ServerProcess]) -> None:
    events = run_scenario("pull", mirror().url)["events"]
    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    progress = [e for e in events if e.get("digest")]
    assert progress and all(e["total"] > 0 for e in progress)
    assert any(e.get("completed") == e["total"] for e in progress)
