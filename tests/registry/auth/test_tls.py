"""https with a certificate from `corral cert`: clients trusting the CA pull, others are refused."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.airgap import corral, sha
from tests.support.models import write_modelfile
from tests.support.server import ServerProcess, base_env, free_port


def start_https(root: Path, cert: Path, key: Path, ca: Path, timeout: float = 60) -> ServerProcess:
    """`corral serve --tls-cert --tls-key`; ready once a client trusting `ca` gets an answer."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / f"server-{port}.log"
    command = [sys.executable, "-m", "registry.cli", "serve", "--tls-cert", str(cert), "--tls-key", str(key)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=base_env(root, port), stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(f"https://127.0.0.1:{port}", port, root, process, log_path)
    trusting = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"corral exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/api/version", verify=trusting, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"corral did not start within {timeout}s:\n{server.log()}")


def make_cert(root: Path, tls: Path, *hosts: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "registry.cli", "cert", "--dir", str(tls), *hosts],
                          env=base_env(root, free_port()), capture_output=True, text=True, timeout=60)


def test_https_with_a_corral_certificate(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    first = make_cert(tmp_path, tls, "corral.lan")
    assert first.returncode == 0, first.stderr
    assert "(new)" in first.stdout and "SSL_CERT_FILE" in first.stdout and "update-ca-certificates" in first.stdout
    ca_bytes = (tls / "ca.crt").read_bytes()
    second = make_cert(tmp_path, tls, "localhost", "127.0.0.1")
    assert second.returncode == 0 and "existing, reused" in second.stdout
    assert (tls / "ca.crt").read_bytes() == ca_bytes  # one CA: clients trust it once
    assert (tls / "ca.key").stat().st_mode & 0o077 == 0

    server = start_https(tmp_path / "corral", tls / "server.crt", tls / "server.key", tls / "ca.crt")
    try:
        trusted = {"OLLAMA_HOST": server.url, "SSL_CERT_FILE": str(tls / "ca.crt")}
        created = corral(server, "create", "smollm2", "-f", str(write_modelfile(tmp_path)), env=trusted)
        assert created.returncode == 0, created.stderr

        assert make_cert(tmp_path, tmp_path / "other", "localhost").returncode == 0  # someone else's CA
        untrusted = {"OLLAMA_HOST": server.url, "SSL_CERT_FILE": str(tmp_path / "other" / "ca.crt")}
        refused = corral(server, "list", env=untrusted)
        assert refused.returncode == 1 and "certificate verify failed" in refused.stderr.lower()

        with httpx.Client(verify=ssl.create_default_context(cafile=str(tls / "ca.crt")), timeout=60) as client:
            manifest = client.get(server.url + "/v2/library/smollm2/manifests/latest").content
            for layer in [*json.loads(manifest)["layers"], json.loads(manifest)["config"]]:
                blob = client.get(f"{server.url}/v2/library/smollm2/blobs/{layer['digest']}")
                assert blob.status_code == 200 and sha(blob.content) == layer["digest"]
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(server.url + "/v2/library/smollm2/manifests/latest")
    finally:
        server.stop()
