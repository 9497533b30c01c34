"""Progress on stderr in ollama's look: one line per step, a spinner while a step runs, a bar for
each transfer (`pulling 1a2b3c4d5e6f:  45% ▕████      ▏ 450 MB/1.0 GB   52 MB/s     10s`).

On a terminal every line is redrawn in place ten times a second, each fitted to the terminal's
width so that nothing wraps (a wrapped line would break the redraw, which counts lines). When
stderr is a file or a pipe nothing is redrawn: a step's line is written once, a bar's when it
starts and when it is done, so logs stay readable.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from registry.units import format_byte_size

REDRAW_INTERVAL = 0.1
SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
RATE_SAMPLES = 10  # one a second at most: the speed is the average of the last ten seconds, as ollama's
Clock = Callable[[], float]


def terminal_size(out: TextIO) -> os.terminal_size:
    """Columns and lines of the terminal `out` writes to (80×24 when it is none)."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (AttributeError, ValueError, OSError):
        return os.terminal_size((80, 24))
    return size if size.columns and size.lines else os.terminal_size((80, 24))


def format_duration(seconds: float) -> str:
    """A time left in at most two units, as ollama prints it: 10s, 4m5s, 1h30m, 99h+."""
    s = round(seconds)
    if s >= 100 * 3600:
        return "99h+"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


class Line(Protocol):
    """A line of the display."""

    def render(self, width: int) -> str: ...


class Bar:
    """One transfer: how much of `total` bytes is done, how fast it goes and how long is left."""

    def __init__(self, message: str, total: int, completed: int = 0, clock: Clock = time.monotonic) -> None:
        self.message = message
        self.total = max(total, 0)
        self.initial = self.completed = min(completed, self.total)
        self._clock = clock
        self.started = clock()
        self.stopped: float | None = self.started if self.completed >= self.total else None
        self._samples: deque[tuple[float, int]] = deque(maxlen=RATE_SAMPLES)

    @property
    def done(self) -> bool:
        return self.stopped is not None

    def set(self, completed: int) -> None:
        self.completed = min(completed, self.total)
        now = self._clock()
        if self.completed >= self.total and self.stopped is None:
            self.stopped = now
        if not self._samples or now - self._samples[-1][0] > 1.0:
            self._samples.append((now, self.completed))

    def rate(self) -> float:
        """Bytes a second: over the whole transfer once done, else over the recent samples (whole
        seconds, as ollama counts them, so the first second shows no speed rather than a wild one)."""
        if self.stopped is not None:
            moved, seconds = self.completed - self.initial, round(self.stopped - self.started)
        elif len(self._samples) == 1:
            (at, value), = self._samples
            moved, seconds = value - self.initial, round(at - self.started)
        elif self._samples:
            (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
            moved, seconds = last - first, round(last_at - first_at)
        else:
            return 0.0
        return moved / seconds if seconds else 0.0

    def render(self, width: int) -> str:
        percent = 100 * self.completed // self.total if self.total else 0
        head = f"{self.message} {percent:3d}%" if self.message else f"{percent:3d}%"
        rate = self.rate()
        if self.done:
            sizes = f"{format_byte_size(self.total):>6}" + " " * 7
        else:
            sizes = f"{format_byte_size(self.completed):>6}/{format_byte_size(self.total):>6}"
        moving = not self.done and rate > 0
        speed = f"  {format_byte_size(int(rate)):>6}/s" if moving else " " * 10
        left = f"  {format_duration((self.total - self.completed) / rate):>6}" if moving else " " * 8
        tail = sizes + speed + left
        room = width - 1 - len(head) - len(tail) - 4  # the bar's two ends and a space either side
        if room < 1:  # a narrow terminal: the numbers without the bar, cut to fit
            return f"{head} {tail.rstrip()}"[: width - 1]
        filled = room * percent // 100
        return f"{head} ▕{'█' * filled}{' ' * (room - filled)}▏ {tail}"


class Spinner:
    """A step that is running: its message and a turning wheel, which stops when the step is over."""

    def __init__(self, message: str = "", clock: Clock = time.monotonic) -> None:
        self.message = message
        self._clock = clock
        self._started = clock()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def render(self, width: int) -> str:
        text = f"{self.message} " if self.message else ""
        if not self.stopped:
            frame = int((self._clock() - self._started) / REDRAW_INTERVAL) % len(SPINNER_FRAMES)
            text += SPINNER_FRAMES[frame] + " "
        return text[: width - 1]


class Progress:
    """The lines of a command's progress, added as it goes (steps and transfers), drawn until `stop`."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.lines: list[Line] = []
        self._drawn = 0  # lines on screen from the last redraw
        self._task: asyncio.Task[None] | None = None
        self._spinner: Spinner | None = None
        self._bars: dict[str, Bar] = {}
        self._logged_done: set[str] = set()

    async def __aenter__(self) -> Progress:
        if self.tty:
            self._task = asyncio.create_task(self._redraw_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def step(self, message: str) -> None:
        """A new step: the one before is over (its spinner stops), this one turns until the next."""
        self._stop_spinner()
        self._spinner = Spinner(message)
        self.lines.append(self._spinner)
        if not self.tty and message:
            print(message, file=self.out, flush=True)

    def transfer(self, key: str, message: str, total: int, completed: int) -> None:
        """Start or move the bar of the transfer `key` (a digest, a file)."""
        self._stop_spinner()
        bar = self._bars.get(key)
        if bar is None:
            self._bars[key] = bar = Bar(message, total, completed)
            self.lines.append(bar)
            if not self.tty:
                print(f"{message} {format_byte_size(total)}", file=self.out, flush=True)
        else:
            bar.set(completed)
        if not self.tty and bar.done and key not in self._logged_done:
            self._logged_done.add(key)
            print(f"{message} done", file=self.out, flush=True)

    def stop(self, clear: bool = False) -> None:
        """Stop the spinners and draw the lines a last time, or wipe them (`clear`). The display is
        empty afterwards, so stopping twice does nothing more."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._stop_spinner()
        if self.tty and self.lines:
            if clear:
                if self._drawn:
                    self._move_to_first()
                    self.out.write("\x1b[J")
            else:
                self._draw()
                self.out.write("\n")
            self.out.flush()
        self.lines, self._drawn, self._bars = [], 0, {}

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    async def _redraw_loop(self) -> None:
        while True:
            self._draw()
            await asyncio.sleep(REDRAW_INTERVAL)

    def _move_to_first(self) -> None:
        if self._drawn > 1:
            self.out.write(f"\x1b[{self._drawn - 1}A")
        self.out.write("\r")

    def _draw(self) -> None:
        if not self.lines:
            return
        width, height = terminal_size(self.out)
        shown = self.lines[-height:]
        text = "\n".join(line.render(width) + "\x1b[K" for line in shown)
        self.out.write("\x1b[?25l")  # hide the cursor while it jumps about
        self._move_to_first()
        self.out.write(text + "\x1b[?25h")
        self.out.flush()
        self._drawn = len(shown)


class EventProgress(Progress):
    """Progress drawn from ollama's NDJSON progress events: an event with `digest`, `total` and
    `completed` moves that digest's bar; any other new `status` is a new step.

    `label` names a digest's bar; by default the event's status does, as in ollama's push and create.
    With `skip_unstarted`, a layer's bar appears when its first bytes arrive, as in ollama's pull
    (whose server announces every layer before any moves)."""

    def __init__(self, out: TextIO | None = None, label: Callable[[dict[str, Any]], str] | None = None,
                 skip_unstarted: bool = False) -> None:
        super().__init__(out)
        self._label = label or (lambda event: str(event.get("status") or event["digest"]))
        self._skip_unstarted = skip_unstarted
        self._status: str | None = None

    def update(self, event: dict[str, Any]) -> None:
        total, digest = event.get("total"), event.get("digest")
        if digest and isinstance(total, int) and total > 0:
            completed = int(event.get("completed") or 0)
            if not (completed == 0 and self._skip_unstarted):
                self.transfer(str(digest), self._label(event), total, completed)
            return
        status = str(event.get("status") or "")
        if status and status != self._status:
            self._status = status
            self.step(status)


def pull_label(event: dict[str, Any]) -> str:
    """ollama pull's bar label: `pulling ` and the first 12 hex digits of the layer, then a colon."""
    name = str(event["digest"]).removeprefix("sha256:").strip()
    return f"pulling {name[:12]}:"
