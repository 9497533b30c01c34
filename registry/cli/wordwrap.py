"""Word wrap for an answer that arrives a few characters at a time, as `ollama run` does it.

A streamed answer cannot be wrapped before it is printed: a word is already on screen when it
turns out not to fit. So, like ollama's displayResponse, the wrapper keeps the word being written;
when the line reaches five columns short of the terminal's edge it moves the cursor back over
that word, clears it and writes it again on the next line. A word too long for a line of its
own is broken where the line ends.
"""

from __future__ import annotations

import unicodedata

MARGIN = 5  # columns left free at the right edge, as ollama leaves them
LONG_WORD_MARGIN = 10  # a word wider than the terminal less this is broken, not moved


def char_width(ch: str) -> int:
    """Columns a character takes: two for East Asian wide ones, none for combining marks."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


class WordWrap:
    """The state of one answer's wrapping: how full the line is and the word being written."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.column = 0
        self.word = ""

    def feed(self, text: str) -> str:
        """What to write for the next piece of the answer (the piece, with line breaks and any
        cursor moves that carry a word to the next line)."""
        if self.width < 2 * LONG_WORD_MARGIN:
            return text  # too narrow to wrap sensibly: the terminal's own wrapping is better
        out: list[str] = []
        for ch in text:
            if ch in "\r\n":
                out.append(ch)
                self.column, self.word = 0, ""
                continue
            w = char_width(ch)
            if self.column + w > self.width - MARGIN:
                out.append(self._break_line(ch))
                continue
            out.append(ch)
            self.column += w
            self.word = "" if ch in " \t" or w > 1 else self.word + ch
        return "".join(out)

    def _break_line(self, ch: str) -> str:
        if ch in " \t":  # the space at the margin becomes the line break
            self.column, self.word = 0, ""
            return "\n"
        word_width = sum(char_width(c) for c in self.word)
        if not self.word or word_width > self.width - LONG_WORD_MARGIN:
            self.column, self.word = char_width(ch), ch
            return "\n" + ch
        moved = f"\x1b[{word_width}D\x1b[K\n{self.word}{ch}"
        self.column, self.word = word_width + char_width(ch), self.word + ch
        return moved
