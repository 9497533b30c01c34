"""Go's json.Encoder output for the layers create writes: floats, escapes, map order, newline."""

from __future__ import annotations

import pytest

from registry.model.gojson import encode, float64, go_map


@pytest.mark.parametrize(
    ("value", "go"),
    [
        (1.0, "1"), (0.7, "0.7"), (4096.0, "4096"), (-2.5, "-2.5"), (-0.0, "-0"),
        (1e20, "100000000000000000000"), (1e21, "1e+21"), (2.5e300, "2.5e+300"),
        (1e-6, "0.000001"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (1e-100, "1e-100"),
        (123456789.125, "123456789.125"), (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_floats_have_gos_digits(value: float, go: str) -> None:
    assert float64(value) == go


def test_non_finite_floats_are_refused_as_go_does() -> None:
    with pytest.raises(ValueError, match="unsupported value"):
        float64(float("nan"))


def test_strings_are_html_safe_and_the_line_ends() -> None:
    assert encode(["<a & b>", "line\nbreak\u2028", "tab\t\x01", "é"]) == (
        b'["\\u003ca \\u0026 b\\u003e","line\\nbreak\\u2028","tab\\t\\u0001","\xc3\xa9"]\n')


def test_a_go_map_is_sorted_and_its_numbers_are_float64s() -> None:
    params = go_map({"temperature": 1, "stop": ["<|im_end|>"], "seed": 2**53 + 1, "use_mmap": True})
    assert encode(params) == (b'{"seed":9007199254740992,"stop":["\\u003c|im_end|\\u003e"],'
                              b'"temperature":1,"use_mmap":true}\n')


def test_objects_keep_their_field_order() -> None:
    assert encode({"role": "user", "content": "hi", "extra": None}) == b'{"role":"user","content":"hi","extra":null}\n'
