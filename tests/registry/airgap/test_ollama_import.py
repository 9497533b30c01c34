"""Import of an existing ollama models folder (manifests/<host>/<ns>/<model>/<tag>, blobs/sha256-*)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from registry.model.manifest import MEDIA_MODEL, MEDIA_PARAMS, MEDIA_TEMPLATE
from registry.model.names import Digest
from registry.server.services import SERVICES
from tests.support.airgap import manifest_for, sha
from tests.support.digests import sha256_file
from tests.support.models import CHATML_TEMPLATE, smollm2_gguf

PARAMS = b'{"stop":["<|im_start|>","<|im_end|>"]}'
CONFIG = json.dumps({
    "model_format": "gguf", "model_family": "llama", "model_families": ["llama"], "model_type": "134.52M",
    "file_type": "Q4_1", "architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": []},
}).encode()


def ollama_folder(root: Path, weights: Path, *, broken: bool = True) -> tuple[bytes, Path]:
    """Lay out a models folder like ollama's; return SmolLM2's manifest and its weights blob path."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    weights_blob = blobs / sha256_file(weights).replace(":", "-")
    shutil.copyfile(weights, weights_blob)
    for data in (CHATML_TEMPLATE.encode(), PARAMS, CONFIG):
        (blobs / sha(data).replace(":", "-")).write_bytes(data)
    (blobs / (sha(b"x").replace(":", "-") + "-partial")).write_bytes(b"an interrupted download")
    doc = json.loads(manifest_for({MEDIA_TEMPLATE: CHATML_TEMPLATE.encode(), MEDIA_PARAMS: PARAMS}, CONFIG))
    doc["layers"].insert(0, {"mediaType": MEDIA_MODEL, "digest": sha256_file(weights),
                             "size": weights.stat().st_size})
    raw = json.dumps(doc).encode() + b"\n"
    target = root / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "latest"
    target.parent.mkdir(parents=True)
    target.write_bytes(raw)
    if broken:
        bad = b"corrupted on disk"
        (blobs / sha(b"original bytes").replace(":", "-")).write_bytes(bad)
        broken_raw = manifest_for({MEDIA_MODEL: b"original bytes"}, CONFIG)
        path = root / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
        path.parent.mkdir(parents=True)
        path.write_bytes(broken_raw)
    return raw, weights_blob


async def import_folder(client: TestClient, root: Path) -> list[dict[str, Any]]:
    resp = await client.post("/api/corral/import/ollama", json={"path": str(root)})
    assert resp.status == 200, await resp.text()
    return [json.loads(line) for line in (await resp.text()).splitlines() if line.strip()]


async def test_import_ollama_folder(client: TestClient, tmp_path: Path) -> None:
    root = tmp_path / "ollama" / "models"
    raw, weights_blob = ollama_folder(root, smollm2_gguf())
    events = await import_folder(client, root)
    assert "1 of 2 models not imported" in events[-1]["error"]
    assert "library/broken/latest: blob" in events[-1]["error"] and "corrupt" in events[-1]["error"]

    tags = (await (await client.get("/api/tags")).json())["models"]
    assert [(m["name"], m["digest"]) for m in tags] == [("smollm2:latest", sha(raw)[7:])]  # ollama's ID
    store = client.server.app[SERVICES].store
    stored = store.path(Digest.parse(sha256_file(weights_blob)))
    assert stored.stat().st_ino == weights_blob.stat().st_ino  # same filesystem: hard-linked
    assert len(store.stored_digests()) == 4  # weights, template, params, config: not the broken one
    show = await (await client.post("/api/show", json={"model": "smollm2"})).json()
    assert show["details"]["family"] == "llama" and show["template"] == CHATML_TEMPLATE
    assert show["model_info"]["general.architecture"] == "llama"

    again = await import_folder(client, root)  # idempotent: only the broken model is tried again
    assert {e["digest"] for e in again if e.get("status", "").startswith("verifying")} == {sha(b"original bytes")}


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    directory = Path(tempfile.mkdtemp(dir="/dev/shm"))
    yield directory
    shutil.rmtree(directory)


async def test_import_from_another_filesystem_copies(client: TestClient, tmp_path: Path,
                                                     other_filesystem: Path) -> None:
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF" + os.urandom(200_000))
    _, weights_blob = ollama_folder(other_filesystem / "models", weights, broken=False)
    events = await import_folder(client, other_filesystem / "models")
    assert events[-1]["status"] == "success"
    store = client.server.app[SERVICES].store
    copied = next(p for p in store.root.iterdir() if p.name == weights_blob.name)
    assert copied.stat().st_ino != weights_blob.stat().st_ino
    assert copied.read_bytes() == weights_blob.read_bytes()
