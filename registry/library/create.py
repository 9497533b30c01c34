"""`/api/create`: build a model manifest from uploaded GGUF blobs or an existing model.

Follows ollama's server/create.go: the weights come from `files` (blobs already uploaded with
`POST /api/blobs/:digest`) or from `from` (a model in the store); template, system, parameters,
messages, license and adapters become layers of their own; the config blob describes the
GGUF (family, parameter size, quantisation) so `/api/tags` needs no GGUF parsing.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.model.gguf import GGUFError
from registry.model.manifest import (
    CONFIG_TYPE,
    MEDIA_ADAPTER,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    build_manifest,
)
from registry.model.modelfile import ModelfileError, parse_parameters
from registry.model.names import Digest, InvalidDigestError, InvalidNameError, ModelName
from registry.storage.catalog import Catalog, ModelNotFound, ModelRecord
from registry.storage.contents import ModelReader
from registry.storage.store import BlobStore
from registry.web.errors import ApiError
from registry.web.jsonbody import field as typed_field

GGUF_MAGIC = b"GGUF"
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


@dataclass
class CreatePlan:
    """What the request's references resolved to, checked before any progress line is sent so
    that a missing blob or base model gets a proper 4xx status instead of a mid-stream error."""

    base: ModelRecord | None
    files: list[tuple[str, Digest, int]]
    adapters: list[tuple[str, Digest, int]]


class ModelCreator:
    """Builds and stores models for `/api/create` from blobs the store already holds."""

    def __init__(self, catalog: Catalog, store: BlobStore, model_reader: ModelReader) -> None:
        self.catalog = catalog
        self.store = store
        self.model_reader = model_reader

    async def plan(self, req: CreateRequest) -> CreatePlan:
        base = await self._base_model(req.from_) if req.from_ else None
        files = [await self._checked_gguf(f, d) for f, d in req.files.items()] if not base else []
        adapters = [await self._checked_gguf(f, d) for f, d in req.adapters.items()]
        return CreatePlan(base, files, adapters)


    async def events(self, req: CreateRequest, plan: CreatePlan) -> AsyncIterator[dict[str, Any]]:
        """Yield ollama's create progress statuses while building and storing the manifest."""
        layers: list[Layer] = []
        config: dict[str, Any] = {}
        base_params: dict[str, Any] = {}
        if plan.base is not None:
            base = plan.base
            base_contents = await self.model_reader.read(base)
            config = {k: v for k, v in base_contents.config.items() if k != "rootfs"}
            base_params = dict(base_contents.params)
            from_name = base.name.display_shortest()
            layers = [Layer(layer.media_type, layer.digest, layer.size, layer.from_ or from_name)
                      for layer in base.manifest.layers]
        for filename, digest, size in plan.files:
            yield {"status": "parsing GGUF"}
            layers.append(Layer(MEDIA_MODEL, digest, size))
            for key, value in (await self._gguf_fields(filename, digest)).items():
                config.setdefault(key, value)
        for _filename, digest, size in plan.adapters:
            yield {"status": "parsing GGUF"}
            layers = [x for x in layers if x.media_type != MEDIA_ADAPTER] + [Layer(MEDIA_ADAPTER, digest, size)]

        existing = {layer.digest for layer in layers}
        if req.template is not None:
            layers = await self._replace(layers, MEDIA_TEMPLATE, req.template.encode(), drop=(MEDIA_PROMPT,))
        if req.system is not None:
            layers = await self._replace(layers, MEDIA_SYSTEM, req.system.encode())
        if req.license:
            layers = [x for x in layers if x.media_type != MEDIA_LICENSE]
            for text in req.license:
                layers.append(await self._text_layer(MEDIA_LICENSE, text.encode()))
        params = {**base_params, **req.parameters}
        layers = [x for x in layers if x.media_type != MEDIA_PARAMS]
        if params:
            layers.append(await self._text_layer(MEDIA_PARAMS, _go_json(params)))
        if req.messages is not None:
            layers = [x for x in layers if x.media_type != MEDIA_MESSAGES]
            if req.messages:
                layers.append(await self._text_layer(MEDIA_MESSAGES, _go_json(req.messages)))

        for key, value in (("renderer", req.renderer), ("parser", req.parser), ("requires", req.requires)):
            if value:
                config[key] = value
        config.setdefault("model_format", "gguf")
        config["architecture"], config["os"] = "amd64", "linux"
        config_layer = await self._text_layer(CONFIG_TYPE, _go_json(config))

        for layer in layers:
            verb = "using existing" if layer.digest in existing else "creating new"
            yield {"status": f"{verb} layer {layer.digest}"}
        yield {"status": "writing manifest"}
        await self.catalog.put_manifest(req.name, build_manifest(config_layer, layers))
        yield {"status": "success"}


    async def _base_model(self, from_text: str) -> ModelRecord:
        try:
            name = ModelName.parse(from_text)
        except InvalidNameError:
            raise ApiError(400, "invalid model name") from None
        try:
            return await self.catalog.require(name)
        except ModelNotFound:
            raise ApiError(404, f"model '{from_text}' not found") from None


    async def _checked_gguf(self, filename: str, digest: Digest) -> tuple[str, Digest, int]:
        size = await self.catalog.servable_size(digest)
        if size is None:
            raise ApiError(400, f"blob {digest} not found; upload it first with POST /api/blobs/{digest}")
        if await asyncio.to_thread(_read_magic, self.store.path(digest)) != GGUF_MAGIC:
            raise ApiError(400, "supplied file was not in GGUF format")
        return filename, digest, size


    async def _gguf_fields(self, filename: str, digest: Digest) -> dict[str, Any]:
        try:
            info = await self.model_reader.gguf_info(digest)
        except GGUFError as exc:
            raise ApiError(400, f"{filename}: {exc}") from None
        return info.config_fields()

    async def _replace(self, layers: list[Layer], media_type: str, data: bytes,
                       drop: tuple[str, ...] = ()) -> list[Layer]:
        kept = [x for x in layers if x.media_type != media_type and x.media_type not in drop]
        return [*kept, await self._text_layer(media_type, data)]

    async def _text_layer(self, media_type: str, data: bytes) -> Layer:
        result = await self.store.ingest(_once(data))
        await self.catalog.record_blob(result.digest, result.size, media_type=media_type)
        return Layer(media_type, result.digest, result.size)


def _read_magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(len(GGUF_MAGIC))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _go_json(value: Any) -> bytes:
    """Compact JSON like Go's json.Marshal (with its HTML escaping), so digests match ollama's."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()
