"""The functions a template can call: Go's built-ins and the ones ollama adds.

Go's `eq`, `index`, `slice`, `len` and the escapers have exact argument rules and error
texts; ollama adds `json`, `currentDate`, `yesterdayDate` and `toTypeScriptType` for chat
templates. One table serves both stages that need it -- parsing rejects names not in it,
execution calls what it holds -- so it sits in a module of its own below the executor.
One deliberate difference from Go: ints and floats compare with each other, because Go's
JSON arguments are all float64 where Python's decoder yields ints.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any, NamedTuple

from runner.template.fmt import sprint, sprintf, sprintln
from runner.template.gojson import JSONUnsupported, to_json
from runner.template.values import GoSlice, GoStruct, PropertyType, is_true, type_name


class CallError(Exception):
    """A function failed; reported as `error calling NAME: ...` like Go's safeCall."""


class ArgError(Exception):
    """An argument of the wrong type; reported as is, like Go's argument conversion."""


def _expect_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ArgError(f"wrong type for value; expected string; got {type_name(value)}")
    return value


def _index_arg(index: Any, cap: int) -> int:
    if index is None:
        raise CallError("cannot index slice/array with nil")
    if isinstance(index, bool) or not isinstance(index, int):
        raise CallError(f"cannot index slice/array with type {type_name(index)}")
    if index < 0 or index > cap:
        raise CallError(f"index out of range: {index}")
    return index


def _fn_index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise CallError("index of untyped nil")
    for index in indexes:
        if item is None:
            raise CallError("index of nil pointer")
        if isinstance(item, dict):
            if not isinstance(index, str):
                raise CallError(f"value has type {type_name(index)}; should be string")
            item = item.get(index)
            continue
        if isinstance(item, PropertyType):
            item = item.types
        elif isinstance(item, str):
            item = item.encode()
        elif not isinstance(item, list | tuple | bytes | bytearray):
            raise CallError(f"can't index item of type {type_name(item)}")
        position = _index_arg(index, len(item))
        if position == len(item):
            raise CallError(f"index out of range: {position}")
        item = item[position]
    return item


def _fn_slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise CallError("slice of untyped nil")
    if len(indexes) > 3:
        raise CallError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise CallError("cannot 3-index slice a string")
        data: Sequence[Any] = item.encode()
    elif isinstance(item, list | tuple):
        data = item
    else:
        raise CallError(f"can't slice item of type {type_name(item)}")
    bounds = [0, len(data), len(data)]
    for i, index in enumerate(indexes):
        bounds[i] = _index_arg(index, len(data))
    for low, high in ((bounds[0], bounds[1]), (bounds[1], bounds[2])):
        if low > high:
            raise CallError(f"invalid slice index: {low} > {high}")
    part = data[bounds[0] : bounds[1]]
    if isinstance(part, bytes):
        return part.decode("utf-8", errors="replace")
    if isinstance(item, GoSlice):
        return GoSlice(part, go_type=item.go_type, stringer=item.stringer)
    return list(part)


def _fn_len(item: Any) -> int:
    if item is None:
        raise CallError("len of nil pointer")
    if isinstance(item, PropertyType):
        return len(item.types)
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, list | tuple | dict | bytes | bytearray):
        return len(item)
    raise CallError(f"len of type {type_name(item)}")


def _basic_kind(value: Any) -> str:
    if value is None:
        return "invalid"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "other"


_NUMERIC = frozenset({"int", "float"})


def _fn_eq(first: Any, *others: Any) -> bool:
    if not others:
        raise CallError("missing argument for comparison")
    kind = _basic_kind(first)
    for other in others:
        other_kind = _basic_kind(other)
        if kind != other_kind:
            if {kind, other_kind} <= _NUMERIC:
                truth = first == other
            elif "invalid" in (kind, other_kind):
                truth = False
            else:
                raise CallError("incompatible types for comparison")
        elif kind == "invalid":
            truth = True
        elif kind == "other":
            if isinstance(first, list | dict) or isinstance(other, list | dict):
                raise CallError(f"non-comparable type {type_name(first)}")
            truth = first is other
        else:
            truth = first == other
        if truth:
            return True
    return False


def _fn_lt(first: Any, second: Any) -> bool:
    kinds = {_basic_kind(first), _basic_kind(second)}
    if not kinds <= {"int", "float", "string"}:
        raise CallError("invalid type for comparison")
    if len(kinds) > 1 and not kinds <= _NUMERIC:
        raise CallError("incompatible types for comparison")
    return bool(first < second)


def _eval_args_text(args: Sequence[Any]) -> str:
    """The text html, js and urlquery escape: one string as is, anything else through Sprint."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if arg is None else arg for arg in args])


_HTML_ESCAPES = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\x00": "\ufffd"}
_JS_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def _fn_html(*args: Any) -> str:
    return "".join(_HTML_ESCAPES.get(ch, ch) for ch in _eval_args_text(args))


def _js_char(ch: str) -> str:
    if ch in _JS_ESCAPES:
        return _JS_ESCAPES[ch]
    if ch < " " or (ch >= "\x80" and not ch.isprintable()):
        return f"\\u{ord(ch):04X}"
    return ch


def _fn_js(*args: Any) -> str:
    return "".join(_js_char(ch) for ch in _eval_args_text(args))


def _fn_urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_eval_args_text(args), safe="")


def _fn_printf(fmt: Any, *args: Any) -> str:
    return sprintf(_expect_string(fmt), args)


def _fn_json(value: Any) -> str:
    try:
        return to_json(value)
    except JSONUnsupported:
        return ""  # ollama discards json.Marshal's error


def _fn_current_date(*args: Any) -> str:
    for arg in args:
        _expect_string(arg)
    return date.today().isoformat()


def _fn_yesterday_date(*args: Any) -> str:
    for arg in args:
        _expect_string(arg)
    return (date.today() - timedelta(days=1)).isoformat()


_TS_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


def _fn_to_typescript_type(value: Any) -> str:
    """ollama's ToolProperty.ToTypeScriptType; anything that is not a tool property is `any`."""
    if not isinstance(value, GoStruct) or value.go_type != "api.ToolProperty":
        return "any"
    any_of = value.fields["AnyOf"]
    if any_of:
        return " | ".join(_fn_to_typescript_type(option) for option in any_of)
    types = value.fields["Type"].types
    return " | ".join(_TS_TYPES.get(t, "any") for t in types) if types else "any"


def _fn_call(fn: Any, *args: Any) -> Any:
    if fn is None:
        raise CallError("call of nil")
    if not callable(fn):
        raise CallError(f"non-function of type {type_name(fn)}")
    return fn(*args)


class Func(NamedTuple):
    """A template function: what it runs and how many arguments it accepts (None: no limit)."""

    impl: Callable[..., Any] | None  # None: and/or, which the executor evaluates lazily
    min_args: int
    max_args: int | None


FUNCS: dict[str, Func] = {
    "and": Func(None, 1, None),
    "or": Func(None, 1, None),
    "not": Func(lambda value: not is_true(value), 1, 1),
    "len": Func(_fn_len, 1, 1),
    "index": Func(_fn_index, 1, None),
    "slice": Func(_fn_slice, 1, None),
    "eq": Func(_fn_eq, 1, None),
    "ne": Func(lambda a, b: not _fn_eq(a, b), 2, 2),
    "lt": Func(_fn_lt, 2, 2),
    "le": Func(lambda a, b: _fn_lt(a, b) or _fn_eq(a, b), 2, 2),
    "gt": Func(lambda a, b: not (_fn_lt(a, b) or _fn_eq(a, b)), 2, 2),
    "ge": Func(lambda a, b: not _fn_lt(a, b), 2, 2),
    "print": Func(lambda *args: sprint(args), 0, None),
    "printf": Func(_fn_printf, 1, None),
    "println": Func(lambda *args: sprintln(args), 0, None),
    "html": Func(_fn_html, 0, None),
    "js": Func(_fn_js, 0, None),
    "urlquery": Func(_fn_urlquery, 0, None),
    "call": Func(_fn_call, 1, None),
    "json": Func(_fn_json, 1, 1),
    "currentDate": Func(_fn_current_date, 0, None),
    "yesterdayDate": Func(_fn_yesterday_date, 0, None),
    "toTypeScriptType": Func(_fn_to_typescript_type, 1, 1),
}
