"""Reading and validating JSON request bodies with ollama's error messages.

Handlers declare the fields they expect; a wrong type or malformed JSON becomes a 400 with a
message that names the field, instead of a KeyError deep in a handler turning into a 500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry.model.names import InvalidNameError, ModelName
from registry.web.errors import ApiError
from runner.jsonbody import BodyError, decode_json


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body's JSON object, decoded by the one decoder every route shares (runner.jsonbody)."""
    raw = await request.read()
    if allow_empty and not raw.strip():
        return {}
    try:
        body = decode_json(raw)
    except BodyError as exc:
        raise ApiError(400, exc.message) from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


_TYPE_NAMES = {str: "string", bool: "boolean", int: "number", float: "number", dict: "object", list: "array"}


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """Return body[name] checked against `kind`; None/absent gives `default`."""
    value = body.get(name)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        want = " or ".join(dict.fromkeys(_TYPE_NAMES.get(k, k.__name__) for k in kinds))
        raise ApiError(400, f"json: cannot unmarshal {type(value).__name__} into field {name} of type {want}")
    return value


def parse_name(text: Any) -> ModelName:
    """The model a request names, with ollama's two messages for a missing and a malformed name."""
    if not isinstance(text, str) or not text:
        raise ApiError(400, "model is required")
    try:
        return ModelName.parse(text)
    except InvalidNameError:
        raise ApiError(400, "invalid model name") from None


def model_field(body: dict[str, Any]) -> Any:
    """`model`, falling back to the deprecated `name` that older clients still send."""
    return body.get("model") or body.get("name")
