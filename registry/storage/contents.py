"""Reading a stored model's layers: text layers, params, messages, config and GGUF header.

Both `/api/show` and the runner's ModelSpec need the same view of a manifest, so it is assembled
here once. GGUF headers are parsed in a worker thread and memoised per blob digest: blobs are
immutable, so the cache never goes stale.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiofiles

from registry.model.gguf import GGUFError, GGUFInfo, list_capabilities, read_gguf_info
from registry.model.manifest import (
    MEDIA_ADAPTER,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
)
from registry.model.names import Digest
from registry.storage.catalog import ModelRecord
from registry.storage.store import BlobStore
from runner.spec import ModelSpec, ModelUnusableError

T = TypeVar("T")

MAX_TEXT_LAYER = 16 * 1024 * 1024  # a template or params layer larger than this is not a real one


@dataclass
class ModelContents:
    record: ModelRecord
    model_path: Path | None
    model_digest: Digest | None
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    adapters: list[Path] = field(default_factory=list)
    projector: Path | None = None
    projector_digest: Digest | None = None
    config: dict[str, Any] = field(default_factory=dict)
    gguf: GGUFInfo | None = None

    def to_spec(self) -> ModelSpec:
        if self.model_path is None:
            raise ModelUnusableError(f"model '{self.record.name.display_shortest()}' has no GGUF model layer")
        return ModelSpec(
            name=self.record.name.display_shortest(),
            qualified_name=str(self.record.name),
            digest=self.record.manifest_digest.hex,
            model_path=self.model_path,
            size=self.record.size,
            template=self.template,
            system=self.system,
            params=self.params,
            messages=tuple(self.messages),
            adapters=tuple(self.adapters),
            projector=self.projector,
            license=tuple(self.license),
            config=self.config,
            gguf=self.gguf.model_info() if self.gguf else {},
            vocab_size=self.gguf.vocab_size if self.gguf else 0,
        )


@dataclass(frozen=True)
class ListFacts:
    """What /api/tags says of a model beyond its config, read (like ollama's model list) from the
    GGUF header and the template layer; 0 and "unknown" where the header says nothing."""

    config: dict[str, Any]  # the config blob; shared by every caller, so read, never changed
    capabilities: tuple[str, ...]
    context_length: int
    embedding_length: int
    quantization: str  # the header's file type name (what a config without `file_type` falls back to)
    parent_model: str  # the model layer's `from`


class _Memo(Generic[T]):
    """A small LRU keyed by digest: blobs never change, so an entry can never go stale."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[Digest, T] = OrderedDict()
        self._size = size

    def get(self, digest: Digest) -> T | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, digest: Digest, item: T) -> T:
        self._items[digest] = item
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return item


class ModelReader:
    """Reads models for /api/show, /api/tags and every inference request; text layers and GGUF
    headers are memoised so a generate call does no file I/O for a model it has seen."""

    def __init__(self, store: BlobStore, gguf_cache_size: int = 64, text_cache_size: int = 1024,
                 list_cache_size: int = 4096) -> None:
        self.store = store
        self._gguf: _Memo[GGUFInfo] = _Memo(gguf_cache_size)
        self._texts: _Memo[str] = _Memo(text_cache_size)
        self._listed: _Memo[ListFacts] = _Memo(list_cache_size)

    async def read(self, record: ModelRecord) -> ModelContents:
        manifest = record.manifest
        model_layer = manifest.first(MEDIA_MODEL)
        contents = ModelContents(
            record=record,
            model_path=self.store.path(model_layer.digest) if model_layer else None,
            model_digest=model_layer.digest if model_layer else None,
        )
        for layer in manifest.layers:
            mt = layer.media_type
            if mt in (MEDIA_TEMPLATE, MEDIA_PROMPT):
                contents.template = await self._text(layer.digest, layer.size)
            elif mt == MEDIA_SYSTEM:
                contents.system = await self._text(layer.digest, layer.size)
            elif mt == MEDIA_LICENSE:
                contents.license.append(await self._text(layer.digest, layer.size))
            elif mt == MEDIA_PARAMS:
                contents.params = await self.json_object(layer.digest, layer.size, "params")
            elif mt == MEDIA_MESSAGES:
                contents.messages = _json_list(await self._text(layer.digest, layer.size), "messages")
            elif mt == MEDIA_ADAPTER:
                contents.adapters.append(self.store.path(layer.digest))
            elif mt == MEDIA_PROJECTOR and contents.projector is None:  # the first, as ollama uses
                contents.projector = self.store.path(layer.digest)
                contents.projector_digest = layer.digest
        contents.config = await self.config(record)
        if model_layer is not None and self.store.exists(model_layer.digest):
            contents.gguf = await self.gguf_info(model_layer.digest)
        return contents

    async def list_facts(self, record: ModelRecord) -> ListFacts | None:
        """ListFacts, memoised per manifest (which pins every layer): /api/tags reads each model's
        GGUF header once, and without pushing the headers inference uses out of their memo.
        None when a text or config layer cannot be read (ollama's list skips such a model; here
        it is still listed, so that it can be seen and removed)."""
        cached = self._listed.get(record.manifest_digest)
        if cached is not None:
            return cached
        try:
            facts = await self._list_facts(record)
        except ModelUnusableError:
            return None
        return self._listed.put(record.manifest_digest, facts)

    async def _list_facts(self, record: ModelRecord) -> ListFacts:
        manifest = record.manifest
        model_layer = manifest.first(MEDIA_MODEL)
        template = None
        for layer in manifest.layers:
            if layer.media_type in (MEDIA_TEMPLATE, MEDIA_PROMPT):
                template = await self._text(layer.digest, layer.size)
        config = await self.config(record)
        info = None
        if model_layer is not None and not (config.get("remote_host") or config.get("remote_model")):
            info = await self._listed_gguf(model_layer.digest)
        has_projector = manifest.first(MEDIA_PROJECTOR) is not None
        return ListFacts(
            config=config,
            capabilities=tuple(list_capabilities(info, template, config, has_projector=has_projector)),
            context_length=_positive_int(info.context_length) if info else 0,
            embedding_length=_positive_int(info.embedding_length) if info else 0,
            quantization=info.file_type if info else "unknown",
            parent_model=(model_layer.from_ or "") if model_layer else "",
        )

    async def _listed_gguf(self, digest: Digest) -> GGUFInfo | None:
        """The header if it can be read; like ollama's list, a model whose weights cannot be read
        is still listed, without what the header would have said."""
        cached = self._gguf.get(digest)
        if cached is not None:
            return cached
        try:
            return await asyncio.to_thread(read_gguf_info, self.store.path(digest))
        except (GGUFError, OSError):
            return None

    async def config(self, record: ModelRecord) -> dict[str, Any]:
        """The config blob as a fresh dict ({} when absent): enough for /api/tags' details."""
        config_layer = record.manifest.config
        if config_layer is None or not self.store.exists(config_layer.digest):
            return {}
        return await self.json_object(config_layer.digest, config_layer.size, "config")

    async def json_object(self, digest: Digest, size: int, what: str) -> dict[str, Any]:
        """A JSON-object layer (`what` names it in the error): params, or the config."""
        return _json_object(await self._text(digest, size), what)

    async def gguf_info(self, digest: Digest) -> GGUFInfo:
        return self._gguf.get(digest) or self._gguf.put(
            digest, await asyncio.to_thread(read_gguf_info, self.store.path(digest))
        )

    async def _text(self, digest: Digest, size: int) -> str:
        cached = self._texts.get(digest)
        if cached is not None:
            return cached
        if size > MAX_TEXT_LAYER:
            raise ModelUnusableError(f"layer {digest} is too large to be a text layer")
        try:
            async with aiofiles.open(self.store.path(digest), encoding="utf-8", errors="replace") as f:
                return self._texts.put(digest, await f.read())
        except FileNotFoundError:
            raise ModelUnusableError(f"layer {digest} is missing from the store") from None


def _positive_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ModelUnusableError(f"the model's {what} layer is not valid JSON") from None
    if not isinstance(value, dict):
        raise ModelUnusableError(f"the model's {what} layer is not a JSON object")
    return value


def _json_list(text: str, what: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ModelUnusableError(f"the model's {what} layer is not valid JSON") from None
    if not isinstance(value, list):
        raise ModelUnusableError(f"the model's {what} layer is not a JSON array")
    return value
