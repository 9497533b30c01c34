"""Helpers for the air-gap tests: synthetic models in an in-process app, keys, CLI runs with env."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.auth.keys import load_or_create_key, public_key_line
from registry.config import load_settings
from registry.egress.gate import Egress
from registry.model.manifest import CONFIG_TYPE, MANIFEST_V2, MEDIA_MODEL, MEDIA_TEMPLATE
from registry.model.names import ModelName
from registry.server.services import SERVICES
from tests.support.digests import sha256_bytes
from tests.support.models import write_modelfile
from tests.support.server import ServerProcess, base_env, start_server

sha = sha256_bytes


def manifest_for(blobs: dict[str, bytes], config: bytes) -> bytes:
    """A manifest naming `blobs` (media type → bytes) and `config`, as ollama writes one."""
    doc = {
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": t, "digest": sha(d), "size": len(d)} for t, d in blobs.items()],
    }
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


async def add_model(client: TestClient, name: str, weights: bytes, template: bytes = b"{{ .Prompt }}") -> bytes:
    """Store a small model in an in-process corral (blobs through /api/blobs); return its manifest."""
    config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
    for data in (weights, template, config):
        resp = await client.post(f"/api/blobs/{sha(data)}", data=data)
        assert resp.status in (200, 201), await resp.text()
    raw = manifest_for({MEDIA_MODEL: weights, MEDIA_TEMPLATE: template}, config)
    await client.server.app[SERVICES].catalog.put_manifest(ModelName.parse(name), raw)
    return raw


def authorize(models_root: Path, key: Ed25519PrivateKey) -> None:
    path = models_root / "authorized_keys"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(public_key_line(key) + " test\n")


def server_key(server: ServerProcess) -> Ed25519PrivateKey:
    return load_or_create_key(server.root / "models" / "id_ed25519")


def corral(server: ServerProcess, *args: str, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI against `server`, with extra environment (SSL_CERT_FILE, OLLAMA_HOST=https://…)."""
    return subprocess.run(
        [sys.executable, "-m", "registry.cli", *args],
        env=base_env(server.root, server.port, env), capture_output=True, text=True, timeout=timeout,
    )


def internet_side(root: Path, env: dict[str, str] | None = None) -> ServerProcess:
    """A corral holding SmolLM2 as `smollm2`, created from a Modelfile with the CLI."""
    server = start_server(root, env)
    try:
        created = corral(server, "create", "smollm2", "-f", str(write_modelfile(root)))
        assert created.returncode == 0, created.stderr
    except BaseException:
        server.stop()
        raise
    return server


def stored_blobs(server: ServerProcess) -> dict[str, Path]:
    """The blob files of a corral process by digest."""
    blobs = server.root / "models" / "blobs"
    return {p.name.replace("-", ":", 1): p for p in blobs.iterdir() if p.name.count("-") == 1}


def egress_to(tmp_path: Path, client: TestClient) -> Egress:
    """A gate that lets requests reach the in-process corral `client` (listed, as a LAN peer would be)."""
    env = {"OLLAMA_MODELS": str(tmp_path / "sender"), "CORRAL_ALLOWED_HOSTS": f"{client.host}:{client.port}"}
    return Egress(load_settings(env=env))
