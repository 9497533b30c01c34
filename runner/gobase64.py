"""Base64 as Go's encoding/json decodes a `[]byte` field (ollama's `images`), errors included.

Go decodes with `base64.StdEncoding`: padding required, `\\r` and `\\n` skipped anywhere, and a
failure is `illegal base64 data at input byte N`, which ollama returns verbatim as its 400. Valid
data takes the C fast path (`binascii`); only data it refuses is walked again the way Go walks
it, from the 4-character group where the trouble starts, to name the same byte Go names.
Stdlib-only, like runner.gotime.
"""

from __future__ import annotations

import binascii
import re

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VALUES = {byte: value for value, byte in enumerate(_ALPHABET)}
_NEWLINES = (ord("\r"), ord("\n"))
_PAD = ord("=")
_NOT_ALPHABET = re.compile(rb"[^A-Za-z0-9+/]")


class Base64Error(ValueError):
    """Go's base64.CorruptInputError: `offset` is the byte it names."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"illegal base64 data at input byte {offset}")
        self.offset = offset


def decode(text: str) -> bytes:
    """The bytes `text` encodes, or Base64Error where Go's decoder would fail."""
    data = text.encode("utf-8", errors="replace")
    newlines = b"\r" in data or b"\n" in data
    compact = data.replace(b"\r", b"").replace(b"\n", b"") if newlines else data
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        pass
    start = 0
    if not newlines:  # every full group before the first odd byte is plain data
        odd = _NOT_ALPHABET.search(data)
        start = ((odd.start() if odd else len(data)) // 4) * 4
    return binascii.a2b_base64(data[:start]) + _go_decode(data, start)


def _go_decode(src: bytes, si: int) -> bytes:
    """Go's Encoding.Decode from offset si, group by group (decodeQuantum)."""
    out = bytearray()
    while si < len(src):
        group: list[int] = []
        padded = False
        while len(group) < 4:
            if si == len(src):
                if not group:
                    return bytes(out)
                raise Base64Error(si - len(group))  # a group cut short, padding missing
            byte = src[si]
            si += 1
            if byte in _VALUES:
                group.append(_VALUES[byte])
                continue
            if byte in _NEWLINES:
                continue
            if byte != _PAD or len(group) < 2:
                raise Base64Error(si - 1)
            if len(group) == 2:  # "==" expected: the second one must follow, newlines aside
                while si < len(src) and src[si] in _NEWLINES:
                    si += 1
                if si == len(src):
                    raise Base64Error(len(src))
                if src[si] != _PAD:
                    raise Base64Error(si - 1)
                si += 1
            while si < len(src) and src[si] in _NEWLINES:
                si += 1
            padded = True
            break
        value = 0
        for digit in (*group, 0, 0, 0)[:4]:
            value = value << 6 | digit
        out += value.to_bytes(3, "big")[: len(group) - 1]
        if padded:
            if si < len(src):
                raise Base64Error(si)  # data after the padding
            break
    return bytes(out)
