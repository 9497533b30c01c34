"""Turning sampled token bytes into text chunks that are safe to send.

A token can end in the middle of a UTF-8 character, and a stop string can straddle tokens. Text
is therefore released only when it is valid UTF-8 and cannot be the beginning of a stop string;
when a stop string appears, everything from it on is dropped and generation ends ("stop").
"""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched = ""  # the stop string found, once `stopped`

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; return the text that can be released now."""
        self._held += self._decoder.decode(data)
        for stop in self._stops:
            at = self._held.find(stop)
            if at != -1:
                self.stopped, self.matched = True, stop
                released, self._held = self._held[:at], ""
                return released
        keep = self._partial_stop_length()
        released = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep :]
        return released

    def flush(self) -> str:
        """Release whatever is held back (generation ended for another reason)."""
        if self.stopped:
            return ""
        released = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return released

    def _partial_stop_length(self) -> int:
        """Length of the longest suffix of the held text that is a proper prefix of some stop string."""
        longest = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self._held)), longest, -1):
                if self._held.endswith(stop[:n]):
                    longest = n
                    break
        return longest
