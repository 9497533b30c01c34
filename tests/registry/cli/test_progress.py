"""Progress bars as ollama draws them: speed and time left from the last seconds of a transfer,
every line fitted to the terminal; a log (not a terminal) gets plain lines; and `corral create`
in a real terminal shows its upload as a bar."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.cli.progress import Bar, EventProgress, Spinner, format_duration, pull_label
from tests.support.bigram import write_bigram_gguf
from tests.support.models import write_modelfile
from tests.support.server import ServerProcess, serving
from tests.support.terminal import Terminal

GB = 1_000_000_000
MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bar_shows_speed_and_time_left_and_fills_the_terminal_width() -> None:
    clock = Clock()
    bar = Bar(pull_label({"digest": "sha256:1a2b3c4d5e6f" + "0" * 52}), GB, clock=clock)
    clock.now = 1.0
    bar.set(10 * MB)
    clock.now = 9.0
    bar.set(450 * MB)  # 440 MB in the last 8 seconds: 55 MB/s, 550 MB to go
    line = bar.render(80)
    assert line.startswith("pulling 1a2b3c4d5e6f:  45% ▕███")
    assert line.endswith("▏ 450 MB/1.0 GB   55 MB/s     10s")
    assert len(line) == 79  # the last column stays free, so the terminal never wraps the line
    filled = line.count("█")
    assert filled == (79 - len("pulling 1a2b3c4d5e6f:  45%") - len("450 MB/1.0 GB   55 MB/s     10s") - 4) * 45 // 100

    clock.now = 19.0
    bar.set(GB)
    done = bar.render(80)
    assert done.endswith("▏ 1.0 GB" + " " * 25) and "100%" in done and "/s" not in done


def test_a_narrow_terminal_gets_the_numbers_without_the_bar() -> None:
    clock = Clock()
    bar = Bar("copying file 0123456789ab", 300 * MB, clock=clock)
    clock.now = 2.0
    bar.set(100 * MB)
    assert len(bar.render(30)) <= 29 and "▕" not in bar.render(30)
    assert len(bar.render(60)) == 59


def test_the_first_second_shows_no_speed_rather_than_a_wild_one() -> None:
    clock = Clock()
    bar = Bar("pushing", GB, clock=clock)
    clock.now = 0.2
    bar.set(MB)
    assert "/s" not in bar.render(100)


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (10, "10s"), (245, "4m5s"), (5400, "1h30m"),
                                               (360_000, "99h+")])
def test_time_left_in_at_most_two_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_spinner_turns_until_its_step_is_over() -> None:
    clock = Clock()
    spinner = Spinner("pulling manifest", clock=clock)
    first = spinner.render(80)
    clock.now = 0.1
    assert first != spinner.render(80) and first.startswith("pulling manifest ")
    spinner.stop()
    assert spinner.render(80) == "pulling manifest "


async def test_a_log_gets_each_step_once_and_each_bar_at_its_start_and_end() -> None:
    log = io.StringIO()
    digest = "sha256:" + "ab" * 32
    async with EventProgress(log, label=pull_label, skip_unstarted=True) as progress:
        for event in (
            {"status": "pulling manifest"},
            {"status": "pulling abababababab", "digest": digest, "total": 2 * MB, "completed": 0},
            {"status": "pulling abababababab", "digest": digest, "total": 2 * MB, "completed": MB},
            {"status": "pulling abababababab", "digest": digest, "total": 2 * MB, "completed": 2 * MB},
            {"status": "verifying sha256 digest"},
            {"status": "verifying sha256 digest"},
            {"status": "success"},
        ):
            progress.update(event)
    assert log.getvalue().splitlines() == [
        "pulling manifest", "pulling abababababab: 2.0 MB", "pulling abababababab: done",
        "verifying sha256 digest", "success",
    ]


@pytest.fixture
def corral(tmp_path: Path) -> Iterator[ServerProcess]:
    with serving(tmp_path / "server") as server:
        yield server


@pytest.mark.model
def test_create_in_a_terminal_shows_the_upload_as_a_bar(corral: ServerProcess, tmp_path: Path) -> None:
    gguf = write_bigram_gguf(tmp_path / "fresh.gguf", {"": ("Fresh", " bytes")})  # a blob the server lacks
    modelfile = write_modelfile(tmp_path, source=gguf)
    terminal = Terminal(corral, "create", "fresh", "-f", str(modelfile), home=tmp_path, cols=70)
    try:
        assert terminal.exit_status() == 0
    finally:
        terminal.close()
    screen = [line for line in terminal.screen() if line]
    assert all(len(line) < 70 for line in screen)
    assert screen[0] == "gathering model components"
    assert re.fullmatch(r"copying file [0-9a-f]{12} 100% ▕█+▏ +\d+ KB", screen[1]), screen
    assert screen[-1] == "success"
