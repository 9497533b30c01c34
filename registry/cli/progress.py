"""Progress bars for the CLI, drawn from ollama-style progress events.

An event with `digest`/`total`/`completed` moves that digest's bar; any other `status` is printed
as a line of its own. On a terminal a bar is redrawn in place; when stderr is a file or a pipe,
only each bar's start and end are written, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from registry.units import format_byte_size

BAR_WIDTH = 25
REDRAW_INTERVAL = 0.1


class ProgressBars:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self._current: str | None = None  # key of the bar on the last line
        self._drawn_at = 0.0
        self._last_status: str | None = None
        self._finished: set[str] = set()

    def update(self, event: dict[str, Any]) -> None:
        status = str(event.get("status", ""))
        total = event.get("total")
        if event.get("digest") and isinstance(total, int) and total > 0:
            self.bar(status, event["digest"], int(event.get("completed") or 0), total)
        elif status and status != self._last_status:
            self._end_bar()
            print(status, file=self.out, flush=True)
        self._last_status = status

    def bar(self, label: str, key: str, completed: int, total: int) -> None:
        done = completed >= total
        if key in self._finished:
            return
        if done:
            self._finished.add(key)
        if key != self._current:
            self._end_bar()
            self._current = key
            if not self.tty:
                print(f"{label} {format_byte_size(total)}", file=self.out, flush=True)
        if not self.tty:
            if done:
                print(f"{label} done", file=self.out, flush=True)
                self._current = None
            return
        now = time.monotonic()
        if not done and now - self._drawn_at < REDRAW_INTERVAL:
            return
        self._drawn_at = now
        filled = BAR_WIDTH * completed // total
        line = (f"{label} {100 * completed // total:3d}% ▕{'█' * filled}{' ' * (BAR_WIDTH - filled)}▏ "
                f"{format_byte_size(completed)}/{format_byte_size(total)}")
        print(f"\r{line}\x1b[K", end="", file=self.out, flush=True)

    def _end_bar(self) -> None:
        if self._current is not None and self.tty:
            print(file=self.out, flush=True)
        self._current = None

    def close(self) -> None:
        self._end_bar()
