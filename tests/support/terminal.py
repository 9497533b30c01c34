"""A `corral` command under a real pseudo-terminal (pexpect), typed at like a user would, and what
its screen shows (pyte, a terminal emulator, replays everything the command wrote)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pexpect
import pyte

from tests.support.server import ServerProcess, base_env

PROMPT = ">>> "


class Terminal:
    """One command running in a terminal of `cols` × `rows`."""

    def __init__(self, server: ServerProcess, *args: str, home: Path, cols: int = 80, rows: int = 24,
                 env: dict[str, str] | None = None, timeout: float = 60) -> None:
        self.cols, self.rows = cols, rows
        self.transcript = io.StringIO()
        environment = base_env(server.root, server.port, {"HOME": str(home), "TERM": "xterm", **(env or {})})
        self.child = pexpect.spawn(sys.executable, ["-m", "registry.cli", *args], env=environment,
                                   dimensions=(rows, cols), encoding="utf-8", timeout=timeout)
        self.child.logfile_read = self.transcript

    def expect(self, text: str) -> str:
        """Wait for `text`; return what came before it."""
        self.child.expect_exact(text)
        return self.child.before

    def prompt(self) -> str:
        """Wait for the chat's prompt; return what came before it."""
        return self.expect(PROMPT)

    def type(self, line: str) -> str:
        """Type a line at the prompt and return everything printed until the next prompt."""
        self.child.sendline(line)
        return self.prompt()

    def screen(self) -> list[str]:
        """The lines the terminal shows now, trailing blanks removed."""
        screen = pyte.Screen(self.cols, self.rows)
        pyte.Stream(screen).feed(self.transcript.getvalue())
        return [line.rstrip() for line in screen.display]

    def exit_status(self) -> int | None:
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
