"""A small model on a real upstream (Debian's docker-registry), for tests that run `corral serve`
processes against it and count what they fetch."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

from registry.model.manifest import MEDIA_MODEL, MEDIA_TEMPLATE
from tests.support.digests import sha256_bytes as sha
from tests.support.docker_registry import DockerRegistry, push_model, start_registry
from tests.support.legacy_pull import LegacyPuller
from tests.support.server import ServerProcess

WEIGHTS = 3_000_000


@dataclass
class TinyUpstream:
    registry: DockerRegistry
    weights: bytes

    @property
    def model(self) -> str:
        """The model's name as a client pulls it through a corral whose CORRAL_UPSTREAM is this
        registry (`/v2/library/tiny` names the same model)."""
        return "tiny"

    @property
    def digest(self) -> str:
        return sha(self.weights)

    def blob_gets(self) -> int:
        """Blob downloads the upstream has answered so far."""
        return len([a for a in self.registry.accesses() if a.method == "GET" and "/blobs/" in a.path])

    def pulled_weights(self, server: ServerProcess, dest: Path) -> bytes:
        """The weights as a client pulling like ollama gets them from `server`."""
        pulled = asyncio.run(LegacyPuller(server.url, dest).pull("library/tiny", "latest"))
        return pulled.blobs[self.digest].read_bytes()


def start_tiny_upstream(root: Path) -> TinyUpstream:
    registry = start_registry(root)
    weights = random.Random(18).randbytes(WEIGHTS)
    try:
        push_model(registry.url, "library/tiny", "latest", [(MEDIA_MODEL, weights), (MEDIA_TEMPLATE, b"{{ .Prompt }}")])
    except BaseException:
        registry.stop()
        raise
    return TinyUpstream(registry, weights)
