"""`corral run MODEL` as a user has it: a real `corral serve` with the scripted bigram models, the
chat in a real pseudo-terminal, keys typed as a user types them. The answers are forced (the
bigram model answers ANSWER to any ordinary text, the endless one "tick tock " until stopped), so
what the screen shows is known."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bigram import ANSWER
from tests.support.server import ServerProcess, base_env, run_cli, serving_scripted_models
from tests.support.terminal import Terminal

pytestmark = pytest.mark.model

UP = "\x1b[A"


@pytest.fixture(scope="module")
def corral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving_scripted_models(tmp_path_factory.mktemp("chat")) as server:
        yield server


@pytest.fixture
def terminals(corral: ServerProcess, tmp_path: Path) -> Iterator[list[Terminal]]:
    """Terminals a test opens, closed afterwards whatever happened."""
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def _chat(corral: ServerProcess, terminals: list[Terminal], home: Path, model: str = "bigram",
          **options: object) -> Terminal:
    terminal = Terminal(corral, "run", model, home=home, **options)  # type: ignore[arg-type]
    terminals.append(terminal)
    terminal.prompt()
    return terminal


def _modelfile(corral: ServerProcess, model: str) -> str:
    shown = run_cli(corral, "show", model, "--modelfile")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_questions_multi_line_input_parameters_and_commands(
    corral: ServerProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    chat = _chat(corral, terminals, tmp_path)
    assert ANSWER in chat.type("What is the capital of France?")
    chat.child.sendline('"""Say')
    chat.expect("... ")
    chat.child.sendline("hello")
    chat.expect("... ")
    assert ANSWER in chat.type('to everyone"""')

    assert "Set parameter 'num_predict' to '3'" in chat.type("/set parameter num_predict 3")
    cut = chat.type("Hi")
    assert "The capital of" in cut and "France" not in cut
    shown = chat.type("/show parameters")
    assert "Model defined parameters:" in shown and "temperature                    0.2" in shown
    assert "User defined parameters:" in shown and "num_predict                    3" in shown
    assert "Couldn't set parameter" in chat.type("/set parameter no_such_thing 1")

    assert "Available Commands:" in chat.type("/?") and "/set parameter ..." in chat.type("/? set")
    assert "Apache License 2.0" in chat.type("/show license")
    assert "<|im_start|>" in chat.type("/show template")
    assert "architecture" in chat.type("/show info")
    assert "No system message was specified for this model." in chat.type("/show system")
    assert "Set system message." in chat.type("/set system Answer in one word.")
    assert "Answer in one word." in chat.type("/show system")
    assert "Set 'verbose' mode." in chat.type("/set verbose")
    assert "eval rate:" in chat.type("Hi")
    assert "Set format to 'json' mode." in chat.type("/set format json")
    assert "Disabled format." in chat.type("/set noformat")
    assert "Unknown command '/nonsense'. Type /? for help" in chat.type("/nonsense")

    assert "Cleared session context" in chat.type("/clear")
    chat.type("One more")
    assert "Created new model 'after-clear'" in chat.type("/save after-clear")
    saved = _modelfile(corral, "after-clear")
    assert "MESSAGE user One more" in saved and "What is the capital" not in saved
    assert "SYSTEM" in saved and "Answer in one word." in saved  # /clear keeps the system message

    chat.child.sendcontrol("d")  # Ctrl+D on an empty line ends the chat
    assert chat.exit_status() == 0


def test_save_then_load(corral: ServerProcess, terminals: list[Terminal], tmp_path: Path) -> None:
    chat = _chat(corral, terminals, tmp_path)
    chat.type("/set system You are terse.")
    chat.type("/set parameter num_predict 3")
    assert "The capital of" in chat.type("Hi")
    assert "Created new model 'terse'" in chat.type("/save terse")
    assert "error: The model name 'not:a:name' is invalid" in chat.type("/save not:a:name")

    assert "Couldn't find model 'ghost'" in chat.type("/load ghost")
    assert "Loading model 'terse'" in chat.type("/load terse")
    assert "You are terse." in chat.type("/show system")
    saved = chat.type("/show modelfile")
    assert "PARAMETER num_predict 3" in saved
    assert "MESSAGE user Hi" in saved and "MESSAGE assistant The capital of" in saved
    chat.child.sendline("/bye")
    assert chat.exit_status() == 0

    # The saved model stands on its own: its parameter shortens the answer outside this session too.
    answered = run_cli(corral, "run", "terse", "Hello")
    assert answered.returncode == 0 and answered.stdout.strip() == "The capital of", answered.stderr


def test_ctrl_c_stops_the_answer_not_the_session(
    corral: ServerProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    chat = _chat(corral, terminals, tmp_path, model="endless")
    chat.type("/set parameter num_predict 100000000")  # hours of "tick tock" unless stopped
    chat.child.sendline("Go on")
    chat.expect("tick tock tick tock tick tock")
    chat.child.sendintr()
    chat.prompt()

    # The answer's request was closed, so the server stopped generating: with one sequence per
    # model, the next question would otherwise wait behind hours of ticking.
    chat.type("/set parameter num_predict 3")
    started = time.monotonic()
    assert "tick tock tick" in chat.type("And now?")
    assert time.monotonic() - started < 30

    chat.child.sendintr()  # at an empty prompt, Ctrl+C only says how to leave
    assert "Use Ctrl + d or /bye to exit." in chat.prompt()

    # As in ollama, the question stays in the conversation and the cut-off answer does not.
    chat.type("/save interrupted")
    saved = _modelfile(corral, "interrupted")
    assert "MESSAGE user Go on" in saved and "MESSAGE user And now?" in saved
    assert saved.count("MESSAGE assistant") == 1 and "MESSAGE assistant tick tock tick" in saved

    chat.child.sendline("/bye")
    assert chat.exit_status() == 0


def test_history_is_recalled_with_the_up_arrow_and_kept_between_sessions(
    corral: ServerProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    chat = _chat(corral, terminals, tmp_path)
    assert ANSWER in chat.type("Where is Paris?")
    chat.type("/set parameter num_predict 3")
    chat.child.send(UP + UP)  # the question again, past the /set line
    repeated = chat.type("")
    assert "Where is Paris?" in repeated and "The capital of" in repeated and ANSWER not in repeated
    chat.child.sendcontrol("d")
    assert chat.exit_status() == 0
    history = tmp_path / ".corral" / "history"
    assert history.read_text().splitlines()[-3:] == ["Where is Paris?", "/set parameter num_predict 3",
                                                     "Where is Paris?"]

    again = _chat(corral, terminals, tmp_path)
    again.child.send(UP + UP)  # the previous session's lines, newest first
    assert "Set parameter 'num_predict' to '3'" in again.type("")

    unrecorded = tmp_path / "elsewhere"
    quiet = _chat(corral, terminals, unrecorded, env={"OLLAMA_NOHISTORY": "1"})
    quiet.type("Not to be kept")
    quiet.child.sendline("/bye")
    assert quiet.exit_status() == 0
    assert not (unrecorded / ".corral" / "history").exists()


def test_answers_wrap_at_the_terminal_width(corral: ServerProcess, terminals: list[Terminal], tmp_path: Path) -> None:
    chat = _chat(corral, terminals, tmp_path, cols=24)
    chat.type("Hi")
    # 24 columns leave 19 for text: "France" would cross the margin, so it moves down whole.
    screen = chat.screen()
    row = screen.index("The capital of")
    assert screen[row + 1] == "France is Paris."

    assert "Set 'nowordwrap' mode." in chat.type("/set nowordwrap")
    assert "The capital of France is Paris." in chat.type("Hi")
    chat.child.sendline("/bye")
    assert chat.exit_status() == 0


def test_a_prompt_or_piped_input_gets_one_plain_answer(corral: ServerProcess) -> None:
    answered = run_cli(corral, "run", "bigram", "Hi", "--verbose")
    assert answered.returncode == 0 and answered.stdout == ANSWER + "\n\n", answered.stderr
    assert "prompt eval count:" in answered.stderr and "eval rate:" in answered.stderr
    piped = subprocess.run([sys.executable, "-m", "registry.cli", "run", "bigram"], input="What is the capital?\n",
                           env=base_env(corral.root, corral.port), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stdout == ANSWER + "\n\n", piped.stderr
