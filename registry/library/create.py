"""`/api/create`: build a model manifest from uploaded GGUF blobs or an existing model.

Follows ollama's server/create.go. The weights come from `files` (blobs already uploaded with
`POST /api/blobs/:digest`, taken in path order) or from `from` (a model in the store, pulled
through the mirror first when it is not, with the pull's progress lines in the stream). Each GGUF
gets its media type from its header: a LoRA adapter, a multimodal projector or a model, whether
it came in `files` or `adapters`. A GGUF whose chat template is close to one of ollama's known
templates gets that Go template and its stop parameters, unless the request brings a template.
Template, system, parameters, messages and license become layers of their own, written with the
bytes ollama writes (Go's JSON encoder), so they share digests with ollama's; the config blob
describes the GGUF (family, parameter size, quantisation) so `/api/tags` needs no GGUF parsing.
A request's TEMPLATE must parse (the runner's parser, handed in) before anything is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.mirror.pull import Puller
from registry.model import chat_templates, gojson
from registry.model.gguf import GGUFError, GGUFInfo
from registry.model.manifest import (
    CONFIG_TYPE,
    MEDIA_ADAPTER,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    build_manifest,
)
from registry.model.names import Digest, InvalidNameError, ModelName
from registry.storage.catalog import Catalog, ModelNotFound, ModelRecord
from registry.storage.contents import ModelReader
from registry.storage.store import BlobStore
from registry.web.errors import ApiError

from .create_request import CreateRequest

GGUF_MAGIC = b"GGUF"

#: Parses a Go template, raising ValueError with the parser's message when it does not parse.
TemplateCheck = Callable[[str], None]

# ollama's ConfigV2 fields in declaration order (the order Go writes them), and whether empty ones are left out.
_CONFIG_FIELDS = (
    ("model_format", False), ("model_family", False), ("model_families", False), ("model_type", False),
    ("file_type", False), ("renderer", True), ("parser", True), ("requires", True), ("remote_host", True),
    ("remote_model", True), ("capabilities", True), ("context_length", True), ("embedding_length", True),
    ("base_name", True), ("draft", True), ("architecture", False), ("os", False),
)


@dataclass
class CreatePlan:
    """What the request's references resolved to, checked before any progress line is sent so
    that a missing blob or a bad template gets a proper 4xx status instead of a mid-stream error.
    `pull` names a base model the store lacks: it is pulled at the start of the stream."""

    base: ModelRecord | None
    pull: ModelName | None
    files: list[tuple[str, Digest, int]]
    adapters: list[tuple[str, Digest, int]]


@dataclass
class _Entry:
    """A layer of the new manifest and the status line ollama prints for it."""

    layer: Layer
    status: str


def _existing(layer: Layer) -> _Entry:
    return _Entry(layer, f"using existing layer {layer.digest}")


def _media_type(info: GGUFInfo) -> str:
    if info.is_adapter:
        return MEDIA_ADAPTER
    return MEDIA_PROJECTOR if info.is_projector else MEDIA_MODEL


class _NewLayers:
    """The small layers one create makes (template, system, params, …), held in memory until the
    manifest is final and only then stored. ollama writes each at once and deletes the ones a later
    step replaces (a detected template under the request's own); the store ends the same, with no
    orphan blobs, and a status says "using existing layer" when the store or this create already
    has those bytes, as ollama's does."""

    def __init__(self, catalog: Catalog, store: BlobStore) -> None:
        self.catalog = catalog
        self.store = store
        self._data: dict[Digest, tuple[str, bytes]] = {}

    async def make(self, media_type: str, data: bytes) -> _Entry:
        digest = Digest((await asyncio.to_thread(hashlib.sha256, data)).hexdigest())  # a template may be megabytes
        present = digest in self._data or await self.catalog.servable_size(digest) is not None
        self._data.setdefault(digest, (media_type, data))
        verb = "using existing" if present else "creating new"
        return _Entry(Layer(media_type, digest, len(data)), f"{verb} layer {digest}")

    def data(self, digest: Digest) -> bytes | None:
        made = self._data.get(digest)
        return made[1] if made else None

    async def store_kept(self, layers: list[Layer]) -> None:
        """Store the layers made here that the manifest references, each once."""
        for digest in dict.fromkeys(layer.digest for layer in layers if layer.digest in self._data):
            media_type, data = self._data[digest]
            result = await self.store.ingest(_once(data), expected=digest)
            await self.catalog.record_blob(result.digest, result.size, media_type=media_type)


class ModelCreator:
    """Builds and stores models for `/api/create` from blobs the store holds or the mirror pulls."""

    def __init__(self, catalog: Catalog, store: BlobStore, model_reader: ModelReader, puller: Puller,
                 check_template: TemplateCheck) -> None:
        self.catalog = catalog
        self.store = store
        self.model_reader = model_reader
        self.puller = puller
        self.check_template = check_template

    async def plan(self, req: CreateRequest) -> CreatePlan:
        if req.template is not None:
            try:
                await asyncio.to_thread(self.check_template, req.template)
            except ValueError as exc:
                raise ApiError(400, f"template error: {exc}") from None
        base, pull = await self._base_model(req.from_) if req.from_ else (None, None)
        from_model = base is not None or pull is not None
        files = [] if from_model else [await self._checked_gguf(f, d) for f, d in sorted(req.files.items())]
        adapters = [await self._checked_gguf(f, d) for f, d in sorted(req.adapters.items())]
        return CreatePlan(base, pull, files, adapters)


    async def events(self, req: CreateRequest, plan: CreatePlan) -> AsyncIterator[dict[str, Any]]:
        """Yield ollama's create progress statuses while building and storing the manifest."""
        base = plan.base
        if plan.pull is not None:
            async for event in self.puller.events(plan.pull, self.puller.endpoint_for(plan.pull)):
                yield event
            base = await self._pulled(plan.pull)
        new = _NewLayers(self.catalog, self.store)
        entries: list[_Entry] = []
        config: dict[str, Any] = {}
        if base is not None:
            base_contents = await self.model_reader.read(base)
            config = {k: v for k, v in base_contents.config.items() if k != "rootfs"}
            from_name = base.name.display_shortest()
            entries = [_existing(Layer(x.media_type, x.digest, x.size, x.from_ or from_name))
                       for x in base.manifest.layers]
        for group in (plan.files, plan.adapters):
            found: list[GGUFInfo] = []
            for filename, digest, size in group:
                yield {"status": "parsing GGUF"}
                info = await self._gguf(filename, digest)
                found.append(info)
                entries.append(_existing(Layer(_media_type(info), digest, size)))
                if _media_type(info) == MEDIA_MODEL:
                    _describe_model(config, info)
            entries += await _detected_templates(new, found)

        if req.template is not None:
            entries = _replaced(entries, await new.make(MEDIA_TEMPLATE, req.template.encode()), MEDIA_PROMPT)
        if req.system is not None:
            entries = _replaced(entries, await new.make(MEDIA_SYSTEM, req.system.encode()))
        for text in req.license:
            entries.append(await new.make(MEDIA_LICENSE, text.encode()))
        entries = await self._parameters(new, entries, req.parameters)
        if req.messages:
            entries = _replaced(entries, await new.make(MEDIA_MESSAGES, gojson.encode(req.messages)))

        for key, value in (("renderer", req.renderer), ("parser", req.parser), ("requires", req.requires)):
            if value:
                config[key] = value
        config.setdefault("model_format", "gguf")
        config["architecture"], config["os"] = "amd64", "linux"
        config_layer = (await new.make(CONFIG_TYPE, _config_json(config))).layer

        for entry in entries:
            yield {"status": entry.status}
        yield {"status": "writing manifest"}
        layers = [e.layer for e in entries]
        await new.store_kept([config_layer, *layers])
        await self.catalog.put_manifest(req.name, build_manifest(config_layer, layers))
        yield {"status": "success"}


    async def _base_model(self, from_text: str) -> tuple[ModelRecord | None, ModelName | None]:
        """The stored base model, or the name to pull when the store does not have it."""
        try:
            name = ModelName.parse(from_text)
        except InvalidNameError:
            raise ApiError(400, "invalid model name") from None
        record = await self.catalog.get(name)
        if record is not None:
            return record, None
        self.puller.endpoint_for(name)  # a host the mirror may not reach is refused before streaming
        return None, name

    async def _pulled(self, name: ModelName) -> ModelRecord:
        try:
            return await self.catalog.require(name)
        except ModelNotFound:
            raise ApiError(404, f"model '{name.display_shortest()}' not found") from None


    async def _checked_gguf(self, filename: str, digest: Digest) -> tuple[str, Digest, int]:
        size = await self.catalog.servable_size(digest)
        if size is None:
            raise ApiError(400, f"blob {digest} not found; upload it first with POST /api/blobs/{digest}")
        if await asyncio.to_thread(_read_magic, self.store.path(digest)) != GGUF_MAGIC:
            raise ApiError(400, "supplied file was not in GGUF format")
        return filename, digest, size

    async def _gguf(self, filename: str, digest: Digest) -> GGUFInfo:
        try:
            return await self.model_reader.gguf_info(digest)
        except GGUFError as exc:
            raise ApiError(400, f"{filename}: {exc}") from None

    async def _parameters(self, new: _NewLayers, entries: list[_Entry], requested: dict[str, Any]) -> list[_Entry]:
        """ollama's setParameters: the request's parameters over those of every params layer
        already there (the first one wins among them), written again as one layer at the end."""
        params = dict(requested)
        for entry in entries:
            if entry.layer.media_type == MEDIA_PARAMS:
                for key, value in (await self._json_object(new, entry.layer)).items():
                    params.setdefault(key, value)
        if not params:
            return entries
        return _replaced(entries, await new.make(MEDIA_PARAMS, gojson.encode(gojson.go_map(params))))

    async def _json_object(self, new: _NewLayers, layer: Layer) -> dict[str, Any]:
        made = new.data(layer.digest)
        if made is not None:
            return json.loads(made)
        return await self.model_reader.json_object(layer.digest, layer.size, "params")


async def _detected_templates(new: _NewLayers, infos: list[GGUFInfo]) -> list[_Entry]:
    """ollama's detectChatTemplate: for each GGUF with a chat template close to a known one,
    that Go template (its status names it) and its parameters."""
    entries = []
    for info in infos:
        known = chat_templates.detect(info.chat_template) if info.chat_template else None
        if known is None:
            continue
        template = await new.make(MEDIA_TEMPLATE, known.text)
        entries.append(_Entry(template.layer, f"using autodetected template {known.name}"))
        if known.parameters is not None:
            entries.append(await new.make(MEDIA_PARAMS, gojson.encode(known.parameters)))
    return entries


def _replaced(entries: list[_Entry], entry: _Entry, *also: str) -> list[_Entry]:
    """`entries` without the layers of `entry`'s media type (and of the types in `also`), then `entry`."""
    dropped = {entry.layer.media_type, *also}
    return [*(e for e in entries if e.layer.media_type not in dropped), entry]


def _describe_model(config: dict[str, Any], info: GGUFInfo) -> None:
    """What a model layer adds to the config, as ollama's createModel: each field from the first
    model layer that has one, and every model layer's architecture in `model_families`."""
    fields = info.config_fields()
    for key in ("model_format", "model_family", "model_type", "file_type"):
        if not config.get(key):
            config[key] = fields[key]
    config["model_families"] = [*(config.get("model_families") or []), info.architecture]


def _config_json(config: dict[str, Any]) -> bytes:
    """The config blob as ollama's json.Encoder writes a ConfigV2: its fields in their order."""
    ordered: dict[str, Any] = {}
    for key, omit_empty in _CONFIG_FIELDS:
        value = config.get(key)
        if omit_empty and not value:
            continue
        ordered[key] = value if value is not None or key == "model_families" else ""
    return gojson.encode(ordered)


def _read_magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(len(GGUF_MAGIC))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
