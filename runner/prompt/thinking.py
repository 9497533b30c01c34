"""Thinking traces in model output, split off the way ollama's thinking package does it.

Reasoning models wrap their chain of thought in tags (`<think>...</think>`). Which tags a model
uses is read from how its chat template replays `.Thinking` in earlier turns; the output is
then split into thinking and content as it streams.
"""

from __future__ import annotations

import enum

from runner.template.node import FieldNode, ListNode, RangeNode, TextNode, walk
from runner.template.template import Template


def _range_over_messages(node: RangeNode) -> bool:
    return any(isinstance(n, FieldNode) and n.idents[0] == "Messages" for n, _ in walk(node.pipe))


def infer_thinking_tags(template: Template) -> tuple[str, str] | None:
    """The (opening, closing) tags around thinking, inferred like ollama's thinking.InferTags.

    A `.Thinking` reference inside a range over `.Messages` is looked at together with the
    innermost list around it: that list's first and last text nodes are the tags. None when
    the template shows no such pair.
    """
    opening = closing = ""
    for node, ancestors in walk(template.root):
        if not isinstance(node, FieldNode) or node.idents[0] != "Thinking":
            continue
        ranges = [a for a in ancestors if isinstance(a, RangeNode)]
        if not ranges or not _range_over_messages(ranges[-1]):
            continue
        enclosing = next(a for a in reversed(ancestors) if isinstance(a, ListNode))
        first, last = enclosing.nodes[0], enclosing.nodes[-1]
        if isinstance(first, TextNode):
            opening = first.text.strip()
        if isinstance(last, TextNode):
            closing = last.text.strip()
    return (opening, closing) if opening and closing else None


class _State(enum.Enum):
    LOOKING_FOR_OPENING = enum.auto()
    EATING_LEADING_SPACE = enum.auto()  # after the opening tag
    THINKING = enum.auto()
    EATING_TRAILING_SPACE = enum.auto()  # after the closing tag
    DONE = enum.auto()


class ThinkingParser:
    """Streaming split of output into (thinking, content), like ollama's thinking.Parser.

    Output that starts (after blanks) with the opening tag is thinking up to the closing tag;
    blanks right after either tag are dropped. Output that starts with anything else has no
    thinking at all. Partial tags at the end of a chunk are held back until they resolve.
    """

    def __init__(self, opening: str = "<think>", closing: str = "</think>") -> None:
        self.opening = opening
        self.closing = closing
        self._state = _State.LOOKING_FOR_OPENING
        self._pending = ""

    def add(self, text: str) -> tuple[str, str]:
        """Feeds a chunk of output; returns the thinking and content that are certain now."""
        self._pending += text
        thinking: list[str] = []
        content: list[str] = []
        while True:
            more = self._step(thinking, content)
            if not more:
                return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """Flushes what was held back at the end of generation."""
        rest, self._pending = self._pending, ""
        if self._state is _State.THINKING:
            return rest, ""
        if self._state is _State.LOOKING_FOR_OPENING:
            return "", rest
        return "", ""

    def _step(self, thinking: list[str], content: list[str]) -> bool:
        """Consumes what the current state can decide; True when another state should look."""
        pending = self._pending
        if self._state is _State.LOOKING_FOR_OPENING:
            stripped = pending.lstrip()
            if stripped.startswith(self.opening):
                self._pending = stripped[len(self.opening) :].lstrip()
                self._state = _State.THINKING if self._pending else _State.EATING_LEADING_SPACE
                return True
            if not stripped or self.opening.startswith(stripped):
                return False
            self._state, self._pending = _State.DONE, ""
            content.append(pending)
            return False
        if self._state is _State.EATING_LEADING_SPACE:
            self._pending = pending.lstrip()
            if not self._pending:
                return False
            self._state = _State.THINKING
            return True
        if self._state is _State.THINKING:
            if self.closing in pending:
                before, after = pending.split(self.closing, 1)
                after = after.lstrip()
                thinking.append(before)
                content.append(after)
                self._pending = ""
                self._state = _State.DONE if after else _State.EATING_TRAILING_SPACE
                return False
            keep = _overlap(pending, self.closing)
            thinking.append(pending[: len(pending) - keep])
            self._pending = pending[len(pending) - keep :]
            return False
        self._pending = ""
        if self._state is _State.EATING_TRAILING_SPACE:
            pending = pending.lstrip()
            if pending:
                self._state = _State.DONE
        content.append(pending)
        return False


def _overlap(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a prefix of tag."""
    for size in range(min(len(text), len(tag)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
