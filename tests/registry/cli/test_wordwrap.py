"""ollama's word wrap of a streamed answer, checked on the screen of a terminal emulator: words
that would cross the margin move down whole, however the answer was cut into pieces."""

from __future__ import annotations

import pyte

from registry.cli.wordwrap import WordWrap


def _screen(pieces: list[str], cols: int) -> list[str]:
    wrap = WordWrap(cols)
    screen = pyte.Screen(cols, 10)
    stream = pyte.Stream(screen)
    for piece in pieces:
        stream.feed(wrap.feed(piece).replace("\n", "\r\n"))  # a terminal's newline is the tty's CR LF
    return [line.rstrip() for line in screen.display if line.strip()]


def test_a_word_crossing_the_margin_moves_to_the_next_line_whole() -> None:
    pieces = ["The", " capital", " of", " France", " is", " Paris", "."]
    assert _screen(pieces, 24) == ["The capital of", "France is Paris."]
    assert _screen(list("The capital of France is Paris."), 24) == ["The capital of", "France is Paris."]


def test_a_word_wider_than_a_line_is_broken_at_the_margin() -> None:
    assert _screen(["a " + "x" * 40], 30) == ["a " + "x" * 23, "x" * 17]


def test_wide_characters_take_two_columns_and_may_break_anywhere() -> None:
    # 30 columns leave 25: ten wide characters, a space and two more fill them (as in ollama,
    # East Asian text is not kept together as a word).
    text = "日本語のテキストです"
    assert _screen([f"{text} {text}"], 30) == [f"{text} 日本", "語のテキストです"]


def test_line_breaks_in_the_answer_start_the_count_again() -> None:
    assert _screen(["short line\n", "another short line"], 24) == ["short line", "another short line"]
