"""Go's encoding/json.Marshal, which templates reach through `json` and String() methods.

ollama's templates print tool definitions and call arguments as JSON that models were trained
on: compact, map keys sorted, `<`, `>` and `&` escaped, Go's float digits, struct fields in tag
order with omitempty. Python's json module differs on each point, hence this encoder.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from runner.template.strconv import digits_exp, digits_fixed, format_g, shortest_digits
from runner.template.values import GoMap, GoSlice, GoStruct, PropertyType, type_name


class JSONUnsupported(ValueError):
    """A value Go's encoding/json would refuse to marshal."""


_JSON_SPECIAL = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')
_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _json_escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if "\ud800" <= ch <= "\udfff":
        return "\\ufffd"
    return _JSON_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _json_string(text: str) -> str:
    return '"' + _JSON_SPECIAL.sub(_json_escape_char, text) + '"'


def _json_float(value: float) -> str:
    if not math.isfinite(value):
        raise JSONUnsupported(f"json: unsupported value: {format_g(value, None, upper=False)}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, point = shortest_digits(value)
    sign = "-" if value < 0 else ""
    if 1e-6 <= abs(value) < 1e21:
        return sign + digits_fixed(digits, point)
    return sign + re.sub(r"e-0(\d)$", r"e-\1", digits_exp(digits, point, "e"))


def _json_empty(value: Any) -> bool:
    """encoding/json's omitempty test."""
    if isinstance(value, PropertyType):
        return not value.types
    if value is None or value is False:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, str | bytes | bytearray | list | tuple | dict) and not value


def to_json(value: Any) -> str:
    """encoding/json.Marshal: compact, map keys sorted, `< > &` escaped, UTF-8 kept."""
    out: list[str] = []
    _encode_json(value, out)
    return "".join(out)


def _encode_json(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, PropertyType):
        if len(value.types) == 1:
            out.append(_json_string(value.types[0]))
        else:
            _encode_json(list(value.types) or None, out)
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_json_float(value))
    elif isinstance(value, str):
        out.append(_json_string(value))
    elif isinstance(value, bytes | bytearray):
        out.append(_json_string(base64.b64encode(value).decode()))
    elif isinstance(value, GoStruct):
        _encode_json_struct(value, out)
    elif isinstance(value, dict):
        _encode_json_map(value, out)
    elif isinstance(value, list | tuple):
        if isinstance(value, GoSlice) and value.is_nil:
            out.append("null")
            return
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode_json(item, out)
        out.append("]")
    else:
        raise JSONUnsupported(f"json: unsupported type: {type_name(value)}")


def _encode_json_struct(value: GoStruct, out: list[str]) -> None:
    tags = value.json_fields or tuple((name, name, False) for name in value.fields)
    out.append("{")
    first = True
    for name, key, omitempty in tags:
        item = value.fields[name]
        if omitempty and _json_empty(item):
            continue
        if not first:
            out.append(",")
        first = False
        out.append(_json_string(key) + ":")
        _encode_json(item, out)
    out.append("}")


def _encode_json_map(value: dict[Any, Any], out: list[str]) -> None:
    if isinstance(value, GoMap) and value.is_nil:
        out.append("null")
        return
    keys = list(value) if isinstance(value, GoMap) and value.ordered else sorted(value, key=str)
    out.append("{")
    for i, key in enumerate(keys):
        if i:
            out.append(",")
        out.append(_json_string(str(key)) + ":")
        _encode_json(value[key], out)
    out.append("}")
