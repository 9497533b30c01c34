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

from registry.model.gguf import GGUFInfo, read_gguf_info
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
            digest=str(self.record.manifest_digest),
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

    def __init__(self, store: BlobStore, gguf_cache_size: int = 64, text_cache_size: int = 1024) -> None:
        self.store = store
        self._gguf: _Memo[GGUFInfo] = _Memo(gguf_cache_size)
        self._texts: _Memo[str] = _Memo(text_cache_size)

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
