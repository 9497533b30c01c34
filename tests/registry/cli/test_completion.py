"""`corral completion bash`: a script bash accepts, which completes commands, flags, and the model
names of the running server, checked by asking bash's completion function as bash itself would."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bigram import write_scripted_gguf
from tests.support.models import write_modelfile
from tests.support.server import ServerProcess, base_env, run_cli, serving


def _script(shell: str) -> str:
    printed = subprocess.run([sys.executable, "-m", "registry.cli", "completion", shell],
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    return printed.stdout


def _complete(script: Path, words: list[str], env: dict[str, str] | None = None) -> list[str]:
    """What bash offers for the last of `words`, as a user pressing Tab there would see."""
    line = " ".join(words)
    driver = (f"source {shlex.quote(str(script))}\n"
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
              f"COMP_CWORD={len(words) - 1}\nCOMP_LINE={shlex.quote(line)}\nCOMP_POINT={len(line)}\n"
              "_shtab_corral\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    done = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "corral.bash"
    path.write_text(_script("bash"))
    return path


def test_the_bash_script_is_valid_and_registers_itself(script: Path) -> None:
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    registered = subprocess.run(["bash", "-c", f"source {shlex.quote(str(script))} && complete -p corral"],
                                capture_output=True, text=True)
    assert registered.stdout.strip() == "complete -o bashdefault -F _shtab_corral corral"


def test_commands_and_flags_complete(script: Path) -> None:
    assert _complete(script, ["corral", "pu"]) == ["push", "pull"]
    assert "completion" in _complete(script, ["corral", ""]) and "serve" in _complete(script, ["corral", ""])
    assert _complete(script, ["corral", "run", "--now"]) == ["--nowordwrap"]
    assert _complete(script, ["corral", "completion", ""]) == ["bash", "zsh"]


def test_files_complete_where_a_file_is_expected(script: Path, tmp_path: Path) -> None:
    (tmp_path / "Modelfile.small").write_text("FROM x\n")
    assert _complete(script, ["corral", "create", "m", "-f", str(tmp_path / "Model")]) == [
        str(tmp_path / "Modelfile.small")]


@pytest.fixture
def corral(tmp_path: Path) -> Iterator[ServerProcess]:
    with serving(tmp_path / "server") as server:
        yield server


@pytest.mark.model
def test_model_names_come_from_the_running_server(script: Path, corral: ServerProcess, tmp_path: Path) -> None:
    modelfile = write_modelfile(tmp_path, source=write_scripted_gguf(tmp_path))
    assert run_cli(corral, "create", "alpha", "-f", str(modelfile)).returncode == 0
    assert run_cli(corral, "cp", "alpha", "alpine").returncode == 0
    env = base_env(corral.root, corral.port)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    assert sorted(_complete(script, ["corral", "run", "al"], env)) == ["alpha:latest", "alpine:latest"]
    assert _complete(script, ["corral", "rm", "alpha:latest", "alpi"], env) == ["alpine:latest"]
