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
from typing import Any

import aiofiles

from registry.catalog import ModelRecord
from registry.gguf_info import GGUFInfo, read_gguf_info
from registry.manifest import (
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
from registry.names import Digest
from registry.store import BlobStore
from runner.spec import ModelSpec, ModelUnusableError

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
        )


class ModelReader:
    def __init__(self, store: BlobStore, gguf_cache_size: int = 64) -> None:
        self.store = store
        self._gguf_cache: OrderedDict[Digest, GGUFInfo] = OrderedDict()
        self._gguf_cache_size = gguf_cache_size
        self._config_cache: OrderedDict[Digest, dict[str, Any]] = OrderedDict()

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
                contents.params = _json_object(await self._text(layer.digest, layer.size), "params")
            elif mt == MEDIA_MESSAGES:
                contents.messages = _json_list(await self._text(layer.digest, layer.size), "messages")
            elif mt == MEDIA_ADAPTER:
                contents.adapters.append(self.store.path(layer.digest))
            elif mt == MEDIA_PROJECTOR:
                contents.projector = self.store.path(layer.digest)
        contents.config = await self.config(record)
        if model_layer is not None and self.store.exists(model_layer.digest):
            contents.gguf = await self.gguf_info(model_layer.digest)
        return contents

    async def config(self, record: ModelRecord) -> dict[str, Any]:
        """The config blob as a dict ({} when absent): enough for /api/tags' details."""
        config_layer = record.manifest.config
        if config_layer is None or not self.store.exists(config_layer.digest):
            return {}
        cached = self._config_cache.get(config_layer.digest)
        if cached is None:
            cached = _json_object(await self._text(config_layer.digest, config_layer.size), "config")
            self._config_cache[config_layer.digest] = cached
            if len(self._config_cache) > 1024:
                self._config_cache.popitem(last=False)
        return cached

    async def gguf_info(self, digest: Digest) -> GGUFInfo:
        cached = self._gguf_cache.get(digest)
        if cached is not None:
            self._gguf_cache.move_to_end(digest)
            return cached
        info = await asyncio.to_thread(read_gguf_info, self.store.path(digest))
        self._gguf_cache[digest] = info
        if len(self._gguf_cache) > self._gguf_cache_size:
            self._gguf_cache.popitem(last=False)
        return info

    async def _text(self, digest: Digest, size: int) -> str:
        if size > MAX_TEXT_LAYER:
            raise ModelUnusableError(f"layer {digest} is too large to be a text layer")
        try:
            async with aiofiles.open(self.store.path(digest), encoding="utf-8", errors="replace") as f:
                return await f.read()
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
