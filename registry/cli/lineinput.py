"""The chat prompt's line editor: GNU readline (through Python's `readline`), with a history file.

readline gives the editing keys ollama's own line editor has (Ctrl+A/E/K/U/W, Alt+B/F, Ctrl+L,
arrows), the Up and Down arrows walk the history, and a bracketed paste of several lines arrives
as one message. The history lives in ~/.corral/history, beside nothing else of the server's: like
ollama's ~/.ollama/history it belongs to the user at the keyboard, not to the models folder
(OLLAMA_MODELS), which may be another machine's. It keeps the last 100 lines and is written after
every line, so a session that ends abruptly loses none. OLLAMA_NOHISTORY or `/set nohistory`
stop recording.
"""

from __future__ import annotations

import contextlib
import readline
from pathlib import Path

HISTORY_LINES = 100


def history_file() -> Path:
    return Path.home() / ".corral" / "history"


class LineInput:
    """Reads the user's lines from the terminal. Must be used on the main thread: Ctrl+C reaches
    Python there, and it is what turns Ctrl+C at the prompt into KeyboardInterrupt."""

    def __init__(self, history: Path, recording: bool = True) -> None:
        self._history = history
        readline.set_history_length(HISTORY_LINES)
        readline.clear_history()
        if history.is_file():
            with contextlib.suppress(OSError):  # an unreadable history is an empty one
                readline.read_history_file(history)
        self.recording = recording

    @property
    def recording(self) -> bool:
        return self._recording

    @recording.setter
    def recording(self, on: bool) -> None:
        self._recording = on
        readline.set_auto_history(on)

    def read(self, prompt: str) -> str:
        """One line (EOFError on Ctrl+D at an empty line, KeyboardInterrupt on Ctrl+C)."""
        line = input(prompt)
        if self._recording and line.strip():
            with contextlib.suppress(OSError):  # a read-only home: the line stays in this session's history
                self._history.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(self._history)
                self._history.chmod(0o600)  # what was typed to a model is nobody else's business
        return line

    @staticmethod
    def pending() -> str:
        """What was typed on the line that Ctrl+C interrupted."""
        return readline.get_line_buffer()
