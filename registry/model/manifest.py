"""Manifest parsing and building (Docker v2 schema 2, as ollama uses it).

Manifests are kept as raw bytes and served verbatim; parsing only extracts the layer list so the
catalogue can link manifests to blobs. Locally created manifests are encoded the way ollama's
WriteManifest does (Go's json.Encoder: compact, trailing newline) so their digests look familiar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from registry.model.names import Digest, InvalidDigestError
from runner.jsonbody import BodyError, decode_json

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_TYPES = (MANIFEST_V2, OCI_MANIFEST)
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"

MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PROMPT = "application/vnd.ollama.image.prompt"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"


class ManifestError(ValueError):
    """A manifest body that is not a usable schema-2 manifest."""


MAX_MEDIA_TYPE = 255  # RFC 6838: type and subtype of at most 127 characters each; the catalogue's column
MAX_SIZE = 2**63 - 1  # a blob size the catalogue's 64-bit column holds


def _media_type(value: Any, what: str) -> str:
    """A media type the catalogue can store as given, on SQLite and PostgreSQL alike: a string of
    at most 255 printable characters (PostgreSQL refuses NUL in text and enforces the length)."""
    if not isinstance(value, str) or len(value) > MAX_MEDIA_TYPE or not value.isprintable():
        raise ManifestError(f"{what} has an invalid mediaType")
    return value


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: Digest
    size: int
    from_: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.from_:
            out["from"] = self.from_
        return out


@dataclass(frozen=True)
class ParsedManifest:
    media_type: str
    config: Layer | None
    layers: tuple[Layer, ...]

    @property
    def all_layers(self) -> tuple[Layer, ...]:
        """Layers plus the config blob: everything a pull must fetch."""
        return (*self.layers, self.config) if self.config else self.layers

    @property
    def total_size(self) -> int:
        return sum(layer.size for layer in self.all_layers)

    def first(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)


def _layer(obj: Any) -> Layer:
    if not isinstance(obj, dict):
        raise ManifestError("layer is not an object")
    try:
        digest = Digest.parse(obj.get("digest", ""))
    except InvalidDigestError as exc:
        raise ManifestError(f"layer has an invalid digest: {exc}") from None
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise ManifestError(f"layer {digest} has an invalid size")
    media_type = _media_type(obj.get("mediaType", ""), f"layer {digest}")
    from_ = obj.get("from")
    return Layer(media_type, digest, size, from_ if isinstance(from_, str) and from_ else None)


def parse_manifest(raw: bytes) -> ParsedManifest:
    try:
        doc = decode_json(raw)
    except BodyError as exc:
        raise ManifestError(f"manifest is not JSON: {exc.message}") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest is not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise ManifestError("unsupported manifest schemaVersion (want 2)")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ManifestError("manifest has no layers list")
    config = doc.get("config")
    return ParsedManifest(
        media_type=_media_type(doc.get("mediaType") or MANIFEST_V2, "manifest"),
        config=_layer(config) if config else None,
        layers=tuple(_layer(x) for x in layers),
    )


def build_manifest(config: Layer, layers: list[Layer]) -> bytes:
    """Encode a manifest like ollama's WriteManifest (compact JSON plus a newline)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
