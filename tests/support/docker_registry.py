"""A real upstream for tests and benchmarks: Debian's `docker-registry` (Docker distribution) on loopback.

Filesystem storage in a temporary folder, access log on stdout (one combined-format line per
request, with the bytes actually written: the "upstream request log" tests count bytes in). No
auth, or `htpasswd` users (bcrypt, the only hash distribution reads) for a registry that refuses
anyone without a password, corral included. Models are pushed in ollama's manifest format
through the registry's own upload API.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx

from tests.support.server import free_port

BINARY = "/usr/bin/docker-registry"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+)')


@dataclass(frozen=True)
class Access:
    method: str
    path: str
    status: int
    bytes: int


@dataclass
class DockerRegistry:
    root: Path
    port: int
    process: subprocess.Popen | None = None
    proxy_of: str | None = None  # remote URL: run as a pull-through cache (benchmark comparison)
    htpasswd: dict[str, str] | None = None  # user → password: every request needs Basic credentials

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "access.log"

    def start(self, timeout: float = 20) -> DockerRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.root / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.proxy_of:
            lines += ["proxy:", f"  remoteurl: {self.proxy_of}"]
        if self.htpasswd is not None:
            users = self.root / "htpasswd"
            users.write_text("".join(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
                                     for user, password in self.htpasswd.items()))
            lines += ["auth:", "  htpasswd:", "    realm: docker-registry", f"    path: {users}"]
        config.write_text("\n".join(lines) + "\n")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log,
                                        stderr=open(self.root / "registry.err", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.root / 'registry.err').read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def accesses(self) -> list[Access]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = _ACCESS.search(line)
            if m:
                out.append(Access(m["method"], m["path"], int(m["status"]), int(m["bytes"])))
        return out

    def stored_blob(self, digest: str) -> Path:
        """Where this registry keeps a blob's bytes once committed (the filesystem driver's layout)."""
        hex_digest = digest.removeprefix("sha256:")
        blobs = self.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return blobs / hex_digest[:2] / hex_digest / "data"

    def blob_bytes_sent(self, digest: str | None = None) -> int:
        """Body bytes the registry wrote for blob GETs (of one digest, or all)."""
        return sum(a.bytes for a in self.accesses()
                   if a.method == "GET" and "/blobs/sha256:" in a.path and (digest is None or a.path.endswith(digest)))


def start_registry(root: Path, proxy_of: str | None = None, htpasswd: dict[str, str] | None = None) -> DockerRegistry:
    return DockerRegistry(root, free_port(), proxy_of=proxy_of, htpasswd=htpasswd).start()


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def push_blob(client: httpx.Client, base: str, repository: str, content: bytes | Path) -> tuple[str, int]:
    """Monolithic upload: POST for a session, then PUT the whole body with ?digest=."""
    if isinstance(content, Path):
        digest, size = _file_digest(content)
        body: bytes | Iterator[bytes] = _chunks(content)
    else:
        digest, size = sha256_of(content), len(content)
        body = content
    if client.head(f"{base}/v2/{repository}/blobs/{digest}").status_code == 200:
        return digest, size
    r = client.post(f"{base}/v2/{repository}/blobs/uploads/")
    r.raise_for_status()
    location = r.headers["Location"]
    sep = "&" if "?" in location else "?"
    r = client.put(f"{location}{sep}digest={digest}", content=body,
                   headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    r.raise_for_status()
    return digest, size


def push_model(base: str, repository: str, tag: str, layers: list[tuple[str, bytes | Path]],
               config: bytes = b'{"model_format":"gguf","model_family":"llama"}',
               auth: tuple[str, str] | None = None) -> bytes:
    """Push blobs and an ollama-format manifest; return the manifest bytes exactly as pushed."""
    with httpx.Client(timeout=300, auth=auth) as client:
        entries = []
        for media_type, content in layers:
            digest, size = push_blob(client, base, repository, content)
            entries.append(f'{{"mediaType":"{media_type}","digest":"{digest}","size":{size}}}')
        config_digest, config_size = push_blob(client, base, repository, config)
        raw = (
            f'{{"schemaVersion":2,"mediaType":"{MANIFEST_V2}",'
            f'"config":{{"mediaType":"{CONFIG_TYPE}","digest":"{config_digest}","size":{config_size}}},'
            f'"layers":[{",".join(entries)}]}}'
        ).encode()
        r = client.put(f"{base}/v2/{repository}/manifests/{tag}", content=raw,
                       headers={"Content-Type": MANIFEST_V2})
        r.raise_for_status()
    return raw
