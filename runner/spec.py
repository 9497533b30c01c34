"""ModelSpec: the narrow seam between the registry and the runner.

The registry resolves a model name to a ModelSpec (paths of blob files plus the small text layers
already read); the runner needs nothing else from the registry, so it never touches the database
or the store layout and can be tested with a spec built by hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ModelNotFoundError(LookupError):
    """The name resolves to no model in the store; the API answers 404."""


class ModelUnusableError(ValueError):
    """The model exists but cannot be run (no GGUF layer, unsupported architecture...); 400."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load and prompt one model, as stored in its manifest's layers."""

    name: str  # DisplayShortest form, e.g. "smollm2:latest"
    digest: str  # hex sha256 of the manifest bytes, bare as /api/ps and /api/tags report it
    model_path: Path  # the GGUF weights blob, mmapped in place
    size: int  # sum of layer sizes, for /api/ps
    template: str | None = None  # Go text/template source, None when the manifest has none
    system: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # the params layer (default options)
    messages: tuple[Mapping[str, Any], ...] = ()  # preset conversation from MESSAGE lines
    adapters: tuple[Path, ...] = ()
    projector: Path | None = None
    license: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)  # the config blob (model_family, file_type…)
    gguf: Mapping[str, Any] = field(default_factory=dict)  # GGUF header key/values (no tensors)
    vocab_size: int = 0  # tokens in the vocabulary, so token ids are checked before a load; 0: unknown
    qualified_name: str = ""  # host/namespace/model:tag (ollama's Model.Name); "" where only `name` is known

    @property
    def error_name(self) -> str:
        """The name ollama's capability errors give (`<Model.Name> does not support tools`)."""
        return self.qualified_name or self.name

    @property
    def architecture(self) -> str:
        return str(self.gguf.get("general.architecture", self.config.get("model_family", "")))

    @property
    def details(self) -> dict[str, Any]:
        """The `details` object of /api/tags, /api/show and /api/ps."""
        family = str(self.config.get("model_family", self.architecture))
        families = self.config.get("model_families") or ([family] if family else None)
        return {
            "parent_model": "",
            "format": str(self.config.get("model_format", "gguf")),
            "family": family,
            "families": list(families) if families else None,
            "parameter_size": str(self.config.get("model_type", "")),
            "quantization_level": str(self.config.get("file_type", "")),
        }


SpecResolver = Callable[[str], Awaitable[ModelSpec]]
"""Resolve a model name as a client typed it; raises ModelNotFoundError or ModelUnusableError."""
