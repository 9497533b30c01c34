"""The index at the front of a bundle: every model, manifest and blob, with digest and size.

The index is the bundle's table of contents and its trust anchor: an importer accepts exactly the
entries it lists (`manifests/sha256-<hex>`, `blobs/sha256-<hex>`), each checked against the
listed digest and size, so signing the index bytes signs the whole bundle. Blobs a `--since`
export left out stay listed with `included: false`; the receiving side must already hold them.
Parsing is strict: anything unexpected is an error naming the field, never a guess.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from registry import __version__
from registry.model.names import Digest, InvalidDigestError, InvalidNameError, ModelName

FORMAT = "corral-bundle/1"
INDEX_NAME = "corral-bundle.json"
SIGNATURE_NAME = "corral-bundle.sig"


class BundleError(ValueError):
    """A bundle that must not be imported; the message names the entry or field at fault."""


@dataclass(frozen=True)
class ManifestItem:
    digest: Digest
    size: int
    media_type: str

    @property
    def entry_name(self) -> str:
        return f"manifests/{self.digest.filename}"


@dataclass(frozen=True)
class BlobItem:
    digest: Digest
    size: int
    media_type: str
    included: bool

    @property
    def entry_name(self) -> str:
        return f"blobs/{self.digest.filename}"


@dataclass(frozen=True)
class BundleIndex:
    models: tuple[tuple[ModelName, Digest], ...]
    manifests: tuple[ManifestItem, ...]
    blobs: tuple[BlobItem, ...]
    corral: str = __version__
    created: float = 0.0

    @property
    def entries(self) -> dict[str, ManifestItem | BlobItem]:
        """The data entries the archive must contain, by name, in archive order."""
        out: dict[str, ManifestItem | BlobItem] = {m.entry_name: m for m in self.manifests}
        out.update({b.entry_name: b for b in self.blobs if b.included})
        return out

    def digests(self) -> set[Digest]:
        """Every blob the receiving side holds once this bundle is imported (for `--since`)."""
        return {b.digest for b in self.blobs}

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "corral": self.corral,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created or time.time())),
            "models": [{"name": str(n), "manifest": str(d)} for n, d in self.models],
            "manifests": [{"digest": str(m.digest), "size": m.size, "mediaType": m.media_type}
                          for m in self.manifests],
            "blobs": [{"digest": str(b.digest), "size": b.size, "mediaType": b.media_type,
                       "included": b.included} for b in self.blobs],
        }
        return (json.dumps(doc, indent=1) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes) -> BundleIndex:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BundleError(f"{INDEX_NAME}: not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BundleError(f"{INDEX_NAME}: not a {FORMAT} index")
        manifests = tuple(ManifestItem(_digest(m, "manifests"), _size(m, "manifests"), _text(m, "manifests"))
                          for m in _list(doc, "manifests"))
        blobs = tuple(BlobItem(_digest(b, "blobs"), _size(b, "blobs"), _text(b, "blobs"), _flag(b))
                      for b in _list(doc, "blobs"))
        for what, items in (("manifest", manifests), ("blob", blobs)):
            seen: set[Digest] = set()
            for item in items:
                if item.digest in seen:
                    raise BundleError(f"{INDEX_NAME}: {what} {item.digest} is listed twice")
                seen.add(item.digest)
        known = {m.digest for m in manifests}
        models = []
        for m in _list(doc, "models"):
            try:
                name = ModelName.parse(m.get("name"))
            except InvalidNameError:
                raise BundleError(f"{INDEX_NAME}: invalid model name {m.get('name')!r}") from None
            digest = _digest({"digest": m.get("manifest")}, "models")
            if digest not in known:
                raise BundleError(f"{INDEX_NAME}: model {name} names an unlisted manifest {digest}")
            models.append((name, digest))
        return cls(tuple(models), manifests, blobs, str(doc.get("corral", "")))


def _list(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise BundleError(f"{INDEX_NAME}: {key} must be a list of objects")
    return value


def _digest(item: dict[str, Any], where: str) -> Digest:
    try:
        return Digest.parse(item.get("digest"))
    except InvalidDigestError:
        raise BundleError(f"{INDEX_NAME}: {where}: invalid digest {item.get('digest')!r}") from None


def _size(item: dict[str, Any], where: str) -> int:
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleError(f"{INDEX_NAME}: {where}: invalid size for {item.get('digest')}")
    return size


def _text(item: dict[str, Any], where: str) -> str:
    value = item.get("mediaType", "")
    if not isinstance(value, str):
        raise BundleError(f"{INDEX_NAME}: {where}: invalid mediaType for {item.get('digest')}")
    return value


def _flag(item: dict[str, Any]) -> bool:
    value = item.get("included")
    if not isinstance(value, bool):
        raise BundleError(f"{INDEX_NAME}: blobs: invalid 'included' for {item.get('digest')}")
    return value
