"""A stand-in for registry.ollama.ai's quirks, served by aiohttp in the test's event loop.

Registry host: `/v2/` is 404; manifests come as `text/plain`; a User-Agent gate answers 412 with
a readable body to clients that are not `ollama/<version ≥ min_version>`; blob HEAD/GET answer 307
to a presigned URL on a second "CDN" host:port (a loopback address, so a corral in front of it
must list `cdn_host` in CORRAL_ALLOWED_HOSTS, or point `data_base` elsewhere); optionally every
request needs a Bearer token whose request must carry a valid ed25519 signature (protocol doc
§3.1), from one of `trusted_keys` when that is set (a private model), and a manifest GET can be
answered with a 307 (`manifest_redirects`).
CDN host: serves those URLs with Range support, optionally throttled, refusing expired ones with
403, and with scripted faults per request: truncated body, connection reset mid-blob, one
corrupted byte, a stall, a 403 as if the URL had expired, or a chunked body (no Content-Length).
Every request is logged with the body bytes actually written, which is what tests count.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
GATE_MESSAGE = "The model you are attempting to pull requires a newer version of Ollama."
EMPTY_BODY_SUM = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()
FAULTS = ("truncate", "reset", "corrupt", "stall", "expire")
WRITE_CHUNK = 16 * 1024


@dataclass
class Logged:
    host: str  # "registry" or "cdn"
    method: str
    path: str
    range: str | None
    status: int
    sent: int = 0
    user_agent: str = ""
    authorization: str = ""


@dataclass
class TokenRequest:
    public_key: str
    query: dict[str, list[str]]
    valid: bool


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeOllamaRegistry:
    require_token: bool = False
    trusted_keys: set[str] | None = None  # public key blobs (base64) given tokens; None: any signer
    min_version: tuple[int, int, int] = (0, 1, 0)
    cdn_rate: int = 0  # bytes/s per CDN response, 0 = unthrottled
    url_ttl: float = 300.0  # lifetime of a presigned URL
    stall_seconds: float = 3600.0
    data_base: str = ""  # where blob redirects point instead of the CDN (scheme://host:port)
    manifest_redirects: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, ref) → Location
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    cdn_faults: list[str] = field(default_factory=list)  # consumed one per CDN GET, in order
    token_requests: list[TokenRequest] = field(default_factory=list)
    _tokens: set[str] = field(default_factory=set)
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    _runners: list[web.AppRunner] = field(default_factory=list)
    registry_port: int = 0
    cdn_port: int = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> FakeOllamaRegistry:
        registry = web.Application()
        registry.add_routes([
            web.get("/v2/", self._ping),
            web.get("/v2/token", self._token),
            web.get(r"/v2/{ns}/{model}/manifests/{ref}", self._manifest),
            web.route("*", r"/v2/{ns}/{model}/blobs/{digest}", self._blob_redirect),
        ])
        cdn = web.Application()
        cdn.add_routes([web.route("*", "/blob/{digest}", self._cdn)])
        self.registry_port = await self._serve(registry)
        self.cdn_port = await self._serve(cdn)
        return self

    async def _serve(self, app: web.Application) -> int:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def cdn_host(self) -> str:
        return f"127.0.0.1:{self.cdn_port}"

    # ---- content -----------------------------------------------------------------------------

    def add_model(self, repository: str, tag: str, layers: list[tuple[str, bytes]],
                  config: bytes = b'{"model_format":"gguf","model_family":"llama"}') -> bytes:
        entries = []
        for media_type, data in (*layers, (CONFIG_TYPE, config)):
            self.blobs[sha256_of(data)] = data
            entries.append({"mediaType": media_type, "digest": sha256_of(data), "size": len(data)})
        raw = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_V2, "config": entries[-1],
                          "layers": entries[:-1]}).encode()
        self.manifests[(repository, tag)] = raw
        return raw

    def cdn_gets(self, digest: str) -> list[Logged]:
        return [e for e in self.log if e.host == "cdn" and e.method == "GET" and e.path.endswith(digest)]

    def bytes_sent(self, digest: str) -> int:
        return sum(e.sent for e in self.cdn_gets(digest))

    def registry_requests(self, kind: str) -> list[Logged]:
        return [e for e in self.log if e.host == "registry" and f"/{kind}/" in e.path]

    # ---- registry host -----------------------------------------------------------------------

    def _record(self, host: str, request: web.Request, status: int) -> Logged:
        entry = Logged(host, request.method, request.path, request.headers.get("Range"), status,
                       user_agent=request.headers.get("User-Agent", ""),
                       authorization=request.headers.get("Authorization", ""))
        self.log.append(entry)
        return entry

    async def _ping(self, request: web.Request) -> web.Response:
        self._record("registry", request, 404)
        return web.Response(status=404, text="404 page not found")

    def _denied(self, request: web.Request) -> web.Response | None:
        """The version gate, then the token check: what registry.ollama.ai answers before content."""
        m = re.match(r"ollama/(\d+)\.(\d+)\.(\d+)", request.headers.get("User-Agent", ""))
        if request.path.endswith("/manifests/" + request.match_info.get("ref", "")) and (
            m is None or tuple(int(x) for x in m.groups()) < self.min_version
        ):
            return web.Response(status=412, text=GATE_MESSAGE)
        if self.require_token:
            auth = request.headers.get("Authorization", "")
            if not (auth.startswith("Bearer ") and auth[7:] in self._tokens):
                repo = f"{request.match_info['ns']}/{request.match_info['model']}"
                return web.Response(status=401, text='{"errors":[{"code":"UNAUTHORIZED"}]}', headers={
                    "WWW-Authenticate": f'Bearer realm="{self.url}/v2/token",service="ollama",'
                                        f'scope="repository:{repo}:pull"'})
        return None

    async def _token(self, request: web.Request) -> web.Response:
        """Verify `<ssh pubkey b64>:<sig b64>` over `GET,<url as sent>,<empty body sum>`."""
        auth = request.headers.get("Authorization", "")
        url = f"{self.url}{request.raw_path}"
        key_b64, _, sig_b64 = auth.partition(":")
        valid = False
        try:
            key = load_ssh_public_key(b"ssh-ed25519 " + key_b64.encode())
            if isinstance(key, Ed25519PublicKey):
                key.verify(base64.b64decode(sig_b64), f"GET,{url},{EMPTY_BODY_SUM}".encode())
                valid = True
        except (ValueError, InvalidSignature):
            valid = False
        query: dict[str, list[str]] = {}
        for k, v in request.query.items():
            query.setdefault(k, []).append(v)
        fresh = abs(time.time() - int(query.get("ts", ["0"])[0])) < 300 and bool(query.get("nonce"))
        self.token_requests.append(TokenRequest(key_b64, query, valid and fresh))
        if not (valid and fresh):
            self._record("registry", request, 401)
            return web.Response(status=401, text="invalid signature")
        if self.trusted_keys is not None and key_b64 not in self.trusted_keys:
            self._record("registry", request, 401)
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "this key may not pull"}]},
                                     status=401)
        token = secrets.token_urlsafe(16)
        self._tokens.add(token)
        self._record("registry", request, 200)
        return web.json_response({"token": token})

    async def _manifest(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            self._record("registry", request, denied.status)
            return denied
        key = (f"{request.match_info['ns']}/{request.match_info['model']}", request.match_info["ref"])
        if key in self.manifest_redirects:
            self._record("registry", request, 307)
            return web.Response(status=307, headers={"Location": self.manifest_redirects[key]})
        raw = self.manifests.get(key)
        if raw is None:
            self._record("registry", request, 404)
            return web.Response(status=404, text='{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        self._record("registry", request, 200).sent = len(raw)
        return web.Response(body=raw, content_type="text/plain")  # what registry.ollama.ai sends

    async def _blob_redirect(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            self._record("registry", request, denied.status)
            return denied
        digest = request.match_info["digest"]
        if digest not in self.blobs:
            self._record("registry", request, 404)
            return web.Response(status=404)
        self._record("registry", request, 307)
        return web.Response(status=307, headers={"Location": self.presigned(digest)})

    def presigned(self, digest: str, expires: float | None = None) -> str:
        exp = int(expires if expires is not None else time.time() + self.url_ttl)
        sig = hmac.new(self._secret, f"{digest}{exp}".encode(), "sha256").hexdigest()[:16]
        base = self.data_base or f"http://{self.cdn_host}"
        return f"{base}/blob/{digest}?X-Expires={exp}&X-Signature={sig}"

    # ---- CDN host ----------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        entry = self._record("cdn", request, 0)
        exp = request.query.get("X-Expires", "0")
        sig = hmac.new(self._secret, f"{digest}{exp}".encode(), "sha256").hexdigest()[:16]
        data = self.blobs.get(digest)
        fault = self.cdn_faults.pop(0) if request.method == "GET" and self.cdn_faults else None
        if data is None or sig != request.query.get("X-Signature") or int(exp) < time.time() or fault == "expire":
            entry.status = 403
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code>Request has expired</Error>")
        start, stop = 0, len(data)
        m = re.match(r"bytes=(\d+)-(\d*)$", request.headers.get("Range", ""))
        if m:
            start = int(m[1])
            stop = min(int(m[2]) + 1, len(data)) if m[2] else len(data)
        body = data[start:stop]
        if fault == "corrupt":
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
        response = web.StreamResponse(status=206 if m else 200, headers={"Accept-Ranges": "bytes"})
        if m:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        if fault != "chunked":  # "chunked": no Content-Length, so the body goes out in HTTP chunks
            response.content_length = len(body)
        entry.status = response.status
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        cut = len(body) // 3 if fault in ("truncate", "reset", "stall") else len(body)
        for offset in range(0, cut, WRITE_CHUNK):
            chunk = body[offset:min(offset + WRITE_CHUNK, cut)]
            await response.write(chunk)
            entry.sent += len(chunk)
            if self.cdn_rate:
                await asyncio.sleep(len(chunk) / self.cdn_rate)
        if fault == "stall":
            await asyncio.sleep(self.stall_seconds)
        if fault in ("truncate", "stall") and request.transport is not None:
            request.transport.close()
            return response
        if fault == "reset" and request.transport is not None:
            request.transport.abort()
            return response
        await response.write_eof()
        return response
