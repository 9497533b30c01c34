"""Go's json.Encoder.Encode for the small JSON layers ollama's create writes (params, messages, config).

A layer's digest is the sha256 of its bytes, so a model created here shares its layers with one
ollama creates only if the bytes agree to the last character. Go's encoder differs from Python's
json module in four ways that matter here: `<`, `>`, `&`, U+2028 and U+2029 are escaped; floats
are written with Go's digits (`1` not `1.0`, `1e-7` not `1e-07`, `1e+21`); a JSON number decoded
into `any` is a float64, so ints past 2**53 round like one; and Encode ends with a newline.
Objects keep the order they are given in: a Go struct's fields are in declaration order, and a
caller encoding a Go map sorts its keys first (`go_map`).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def encode(value: Any) -> bytes:
    """`json.NewEncoder(w).Encode(value)`: compact, HTML-safe, with the trailing newline."""
    return (_value(value) + "\n").encode()


def go_map(mapping: dict[str, Any]) -> dict[str, Any]:
    """A dict as Go writes a `map[string]any` decoded from JSON: keys sorted, every number a float64."""
    return {key: _as_decoded(mapping[key]) for key in sorted(mapping)}


def _as_decoded(value: Any) -> Any:
    if isinstance(value, dict):
        return go_map(value)
    if isinstance(value, list | tuple):
        return [_as_decoded(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float64(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(str(k))}:{_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    return "".join(_ESCAPES.get(char, char) for char in encoded) if any(c in encoded for c in _ESCAPES) else encoded


def float64(value: float) -> str:
    """encoding/json's float64: the shortest digits, positional unless the magnitude is below 1e-6
    or from 1e21 on, where it is `d.ddde±x` with at least two exponent digits only when positive."""
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    prefix = "-" if sign else ""
    point = len(digits) + int(exponent) - 1  # the decimal exponent of the first digit
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if point < 0 else '+'}{abs(point) if point < 0 else f'{point:02d}'}"
    if exponent >= 0:
        return prefix + digits + "0" * int(exponent)
    fraction = -int(exponent)
    if len(digits) > fraction:
        return f"{prefix}{digits[:-fraction]}.{digits[-fraction:]}"
    return f"{prefix}0.{'0' * (fraction - len(digits))}{digits}"
