"""The body of `POST /api/create`, checked before anything streams so that mistakes get a 400.

Field by field as ollama's api.CreateRequest reads it: `files` and `adapters` map relative paths
(Go's fs.ValidPath) to blob digests; `license` is a string or a list; `parameters` follow the
Modelfile's PARAMETER typing; `messages` need a known role. Quantizing is not offered.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from registry.model.modelfile import ModelfileError, parse_parameters
from registry.model.names import Digest, InvalidDigestError, InvalidNameError, ModelName
from registry.web.errors import ApiError
from registry.web.jsonbody import field as typed_field

_VALID_ROLES = ("system", "user", "assistant", "tool")


@dataclass
class CreateRequest:
    name: ModelName
    from_: str | None = None
    files: dict[str, Digest] = field(default_factory=dict)
    adapters: dict[str, Digest] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    stream: bool = True


def _digest_map(body: dict[str, Any], key: str) -> dict[str, Digest]:
    raw = typed_field(body, key, dict, {})
    out: dict[str, Digest] = {}
    for filename, digest in raw.items():
        if not _valid_relative_path(filename):
            raise ApiError(400, "file path must be relative")
        try:
            out[filename] = Digest.parse(digest)
        except InvalidDigestError:
            raise ApiError(400, "invalid digest format") from None
    return out


def _valid_relative_path(name: str) -> bool:
    """Go's fs.ValidPath: slash-separated, unrooted, no `.`/`..` elements, no empty elements."""
    if not name or name.startswith("/") or "\\" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/")) and posixpath.normpath(name) == name


def _licenses(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ApiError(400, "license must be a string or a list of strings")


def _messages(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ApiError(400, "messages must be a list")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content", ""), str):
            raise ApiError(400, "each message needs a string role and content")
        if m["role"] not in _VALID_ROLES:
            raise ApiError(400, f"invalid message role: {m['role']}")
        out.append({"role": m["role"], "content": m.get("content", "")})
    return out


def _parameters(value: Any) -> dict[str, Any]:
    """Validate `parameters` with the same typing rules as Modelfile PARAMETER lines."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "parameters must be an object")
    pairs: list[tuple[str, str]] = []
    for key, v in value.items():
        values = v if isinstance(v, list) else [v]
        pairs.extend((key, json.dumps(x) if not isinstance(x, str) else x) for x in values)
    try:
        return parse_parameters(pairs)
    except ModelfileError as exc:
        raise ApiError(400, str(exc)) from None


def parse_create_request(body: dict[str, Any]) -> CreateRequest:
    """Validate everything that can be checked before streaming starts (so errors get a 400)."""
    if typed_field(body, "quantize", str) or typed_field(body, "quantization", str):
        raise ApiError(400, "quantization is not supported by corral; quantize with llama.cpp first")
    name_text = body.get("model") or body.get("name")
    if not isinstance(name_text, str) or not name_text:
        raise ApiError(400, "invalid model name")
    try:
        name = ModelName.parse(name_text)
    except InvalidNameError:
        raise ApiError(400, "invalid model name") from None
    request = CreateRequest(
        name=name,
        from_=typed_field(body, "from", str) or None,
        files=_digest_map(body, "files"),
        adapters=_digest_map(body, "adapters"),
        template=typed_field(body, "template", str) or None,
        system=typed_field(body, "system", str) or None,
        license=_licenses(body.get("license")),
        parameters=_parameters(body.get("parameters")),
        messages=_messages(body.get("messages")),
        renderer=typed_field(body, "renderer", str, ""),
        parser=typed_field(body, "parser", str, ""),
        requires=typed_field(body, "requires", str, ""),
        stream=typed_field(body, "stream", bool, True),
    )
    if not request.from_ and not request.files:
        raise ApiError(400, "neither 'from' or 'files' was specified")
    if len(request.adapters) > 1:
        raise ApiError(400, "only one adapter is currently supported")
    return request
