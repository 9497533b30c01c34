"""`corral run`, `corral ps`, `corral stop` against a running runner, output checked as a user sees it.

The answers come from the scripted bigram model, so the text a user would read is known."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.cli.client import ClientError
from registry.cli.runner import cmd_ps, cmd_run, cmd_stop
from registry.config import Settings, load_settings
from tests.support.bigram import ANSWER
from tests.support.runner import Harness

pytestmark = pytest.mark.model


def _settings(harness: Harness, tmp_path: Path) -> Settings:
    host = harness.url.removeprefix("http://")
    return load_settings(env={"OLLAMA_HOST": host, "OLLAMA_MODELS": str(tmp_path / "models")})


def _run_args(*prompt: str, **flags: object) -> argparse.Namespace:
    values = {"model": "bigram", "prompt": list(prompt), "verbose": False, "keepalive": None, "format": None}
    values |= {"think": None, **flags}
    return argparse.Namespace(**values)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_run_with_a_prompt_streams_the_answer(
    scripted: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal())
    code = await cmd_run(_run_args("What is the capital of France?", verbose=True), _settings(scripted, tmp_path))
    out, err = capsys.readouterr()
    assert code == 0
    assert ANSWER in out
    assert "eval rate:" in err and "prompt eval count:" in err


async def test_run_reads_piped_stdin_as_the_prompt(
    scripted: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?\n"))
    assert await cmd_run(_run_args(), _settings(scripted, tmp_path)) == 0
    assert ANSWER in capsys.readouterr().out


async def test_interactive_chat_until_bye(
    scripted: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: Iterator[str] = iter(["What is the capital of France?", "/clear", '"""Say', 'hello"""', "/?", "/bye", "x"])
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(lines))
    assert await cmd_run(_run_args(keepalive="1m"), _settings(scripted, tmp_path)) == 0
    out = capsys.readouterr().out
    assert ANSWER in out and "Cleared session context" in out and "/bye" in out
    assert next(lines) == "x"  # nothing read after /bye


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
