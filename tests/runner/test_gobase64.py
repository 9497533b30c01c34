"""Images' base64 decoded as Go's encoding/json decodes `[]byte`, so a bad one gets ollama's 400 word
for word. The offsets are the ones Go's own encoding/base64 tests expect (TestDecodeCorrupt)."""

from __future__ import annotations

import base64

import pytest

from runner import gobase64


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("!!!!", 0), ("====", 0), ("x===", 1), ("=AAA", 0), ("A=AA", 1), ("AA=A", 2), ("AA==A", 4),
        ("AAA=AAAA", 4), ("AAAAA", 4), ("AAAAAA", 4), ("A=", 1), ("A==", 1), ("AA=", 3), ("AAAAAA=", 7),
        ("YWJjZA=====", 8), ("A!\n", 1), ("A=\n", 1), ("aGk", 0), ("YWJjZGVmZ2hp!", 12),
    ],
)  # fmt: skip
def test_corrupt_input_names_the_byte_go_names(text: str, offset: int) -> None:
    with pytest.raises(gobase64.Base64Error, match=f"^illegal base64 data at input byte {offset}$"):
        gobase64.decode(text)


@pytest.mark.parametrize(
    ("text", "data"),
    [("", b""), ("\n", b""), ("AAA=\n", b"\0\0"), ("AAAA\n", b"\0\0\0"), ("AA==", b"\0"), ("YWJj\r\nZGVm", b"abcdef"),
     ("YQ=\n=", b"a"), ("YR==", b"a")],
)  # fmt: skip
def test_what_go_accepts_decodes_to_the_same_bytes(text: str, data: bytes) -> None:
    assert gobase64.decode(text) == data


def test_a_large_image_takes_the_fast_path() -> None:
    data = bytes(range(256)) * 40_000
    assert gobase64.decode(base64.b64encode(data).decode()) == data
