"""`corral ps` and `corral stop` against a running runner, output checked as a user sees it.

(`corral run` is tested against a real `corral serve` in test_interactive.py: it asks the
server's /api/show, which a runner alone does not serve.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from registry.cli.client import ClientError
from registry.cli.runner import cmd_ps, cmd_stop
from registry.config import Settings, load_settings
from tests.support.runner import Harness

pytestmark = pytest.mark.model


def _settings(harness: Harness, tmp_path: Path) -> Settings:
    host = harness.url.removeprefix("http://")
    return load_settings(env={"OLLAMA_HOST": host, "OLLAMA_MODELS": str(tmp_path / "models")})


async def test_ps_and_stop(harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(harness, tmp_path)
    await harness.client().generate(model="smollm2", prompt="", keep_alive="10m")
    assert await cmd_ps(argparse.Namespace(), settings) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert row.startswith("smollm2:latest") and "100% CPU" in row and "256" in row and "minutes from now" in row
    assert await cmd_stop(argparse.Namespace(model="smollm2"), settings) == 0
    assert harness.runner.loaded_names() == set()
    with pytest.raises(ClientError, match='couldn\'t find model "ghost" to stop'):
        await cmd_stop(argparse.Namespace(model="ghost"), settings)
