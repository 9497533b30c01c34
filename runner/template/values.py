"""Go values in Python: the types templates see and the rules Go applies to any value.

Templates branch on Go's truthiness, range over maps in sorted key order and print Go's type
names in `%T` and in errors; structs refuse unknown fields, slices and maps can be nil. The
executor, `fmt`, `encoding/json` and the built-in functions all ask these questions, so the
answers live in one module below all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class GoStruct:
    """A Go struct as a template sees it: named fields, and an error for any other name.

    `json_fields` plays the part of struct tags, as (field, json key, omitempty) triples; None
    means untagged, which `encoding/json` writes with the Go field names. `stringer` marks types
    whose String() method prints their JSON, so `{{ . }}` shows JSON instead of `{a b}`.
    """

    __slots__ = ("fields", "go_type", "json_fields", "stringer")

    def __init__(
        self,
        go_type: str,
        fields: dict[str, Any],
        json_fields: tuple[tuple[str, str, bool], ...] | None = None,
        *,
        stringer: bool = False,
    ) -> None:
        self.go_type = go_type
        self.fields = fields
        self.json_fields = json_fields
        self.stringer = stringer

    def __repr__(self) -> str:
        return f"GoStruct({self.go_type!r}, {self.fields!r})"


class GoSlice(list):
    """A Go slice that remembers nil-ness (JSON `null`) and whether String() prints JSON."""

    __slots__ = ("go_type", "is_nil", "stringer")

    def __init__(self, items: Iterable[Any] = (), *, go_type: str = "[]interface {}", stringer: bool = False) -> None:
        super().__init__(items)
        self.go_type = go_type
        self.is_nil = not self
        self.stringer = stringer


class GoMap(dict):
    """A Go map: ranged and printed in sorted key order.

    `ordered` maps encode their JSON in insertion order (ollama's ordered maps); `stringer`
    maps print JSON, `{}` when nil, like ollama's templateArgs and templateProperties.
    """

    __slots__ = ("go_type", "is_nil", "ordered", "stringer")

    def __init__(
        self,
        items: Mapping[str, Any] | None = None,
        *,
        go_type: str = "map[string]interface {}",
        stringer: bool = False,
        ordered: bool = False,
    ) -> None:
        super().__init__(items or {})
        self.go_type = go_type
        self.is_nil = items is None
        self.stringer = stringer
        self.ordered = ordered


class PropertyType(str):
    """A tool property's JSON-schema type: one name or several, printed like ollama's String().

    It behaves as the string templates compare it with (`eq .Type "string"`) while ranging,
    indexing and JSON see the list of names.
    """

    types: tuple[str, ...]

    def __new__(cls, types: Sequence[str]) -> PropertyType:
        text = types[0] if len(types) == 1 else f"[{' '.join(types)}]" if types else ""
        obj = super().__new__(cls, text)
        obj.types = tuple(types)
        return obj


def type_name(value: Any) -> str:
    """Go's name for the type of a value, as `%T` and error messages show it."""
    if value is None:
        return "<nil>"
    if isinstance(value, GoStruct | GoSlice | GoMap):
        return value.go_type
    if isinstance(value, PropertyType):
        return "api.PropertyType"
    for kind, name in (
        (bool, "bool"),
        (int, "int"),
        (float, "float64"),
        (str, "string"),
        (bytes | bytearray, "[]uint8"),
        (dict, "map[string]interface {}"),
        (list | tuple, "[]interface {}"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def is_true(value: Any) -> bool:
    """Go's template truth: zero values, nil and empty containers are false, structs true."""
    if value is None:
        return False
    if isinstance(value, GoStruct):
        return True
    return bool(value)


def sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(mapping)
    except TypeError:
        return sorted(mapping, key=str)
