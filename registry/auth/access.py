"""Who may write: registry tokens for keys in authorized_keys, and the admin token for /api.

Registry side (protocol doc §3.1): a `/v2/` write without a valid token gets 401 with
`WWW-Authenticate: Bearer realm="<scheme://host:port>/v2/token"` on the very host:port the client
used (ollama refuses a realm on any other host). The client signs `GET,<token URL>,<zero-sum>`
with its ed25519 key; corral checks the key is listed in `authorized_keys`, the signature, the
`ts` freshness and that the nonce was never used before, then issues a short-lived opaque token.
Tokens and nonces live in memory (`Grants`): a restart only costs clients one more token request.
In a cluster they live in the catalogue (`auth.shared_grants`), so a token any node issued is good
on every node and a nonce used on one node is refused on all.
With CORRAL_PULL_AUTH a blob GET may instead carry a presigned URL's signature (`presigned`):
ollama fetches a blob's parts without its token.

ollama API side: when corral listens beyond loopback, every `/api` route that changes the store
(create, delete, copy, blob upload, push, corral's own admin routes) requires
`Authorization: Bearer $CORRAL_ADMIN_TOKEN`; inference, show and pull stay open like ollama's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from registry.auth.keys import (
    SignatureError,
    key_blob,
    load_or_create_key,
    public_key_line,
    token_request_data,
    verify_challenge,
)
from registry.auth.presigned import PresignedBlobs
from registry.config import Settings
from registry.web.errors import UNAUTHORIZED, OciError, api_error_response, oci_error_response

log = logging.getLogger("corral.auth")

TOKEN_PATH = "/v2/token"
SERVICE = "corral"
TOKEN_TTL = 300.0  # seconds a token is valid; ollama fetches a fresh one on the next 401
SIGNATURE_WINDOW = 300.0  # how far a signed request's `ts` may be from our clock
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_API_WRITES = frozenset({
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show", "/api/pull",
})


class AuthorizedKeys:
    """The `authorized_keys` file (ollama/ssh `.pub` lines), re-read whenever it changes.

    Operators add a key by appending its line; no restart. Lines that are not ssh-ed25519 keys are
    logged and ignored, so a typo never grants anything.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[bytes, str] = {}

    def lookup(self, blob: bytes) -> str | None:
        """The key's line (with its comment) when `blob` is authorised, else None."""
        self._refresh()
        return self._keys.get(blob)

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._keys = None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        keys: dict[bytes, str] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                keys[key_blob(line)] = line
            except ValueError:
                log.warning("%s:%d: not an ssh-ed25519 public key, ignored", self.path, number)
        self._stamp, self._keys = stamp, keys


class NonceCache:
    """Nonces seen within the signature window; a signed request is accepted once.

    A nonce is kept for twice the window: by then any replay's `ts` is stale anyway.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: OrderedDict[tuple[bytes, str], float] = OrderedDict()

    def use(self, key: bytes, nonce: str, now: float) -> bool:
        while self._seen and next(iter(self._seen.values())) < now - 2 * self.window:
            self._seen.popitem(last=False)
        if (key, nonce) in self._seen:
            return False
        self._seen[(key, nonce)] = now
        return True


@dataclass(frozen=True)
class Grant:
    key: str  # the authorized_keys line of the key that asked
    expires: float


class Grants:
    """Issued tokens and used nonces of one server, in memory."""

    def __init__(self) -> None:
        self.nonces = NonceCache(SIGNATURE_WINDOW)
        self._tokens: dict[str, Grant] = {}

    async def use_nonce(self, key: bytes, nonce: str, now: float) -> bool:
        """False when this key signed a request with this nonce before (a replay)."""
        return self.nonces.use(key, nonce, now)

    async def remember(self, token: str, grant: Grant) -> None:
        now = time.time()
        self._tokens = {t: g for t, g in self._tokens.items() if g.expires > now}
        self._tokens[token] = grant

    async def lookup(self, token: str) -> Grant | None:
        return self._tokens.get(token)


class Authenticator:
    """Token issuing and checking for one server: the token endpoint and the access middleware.

    One instance per server, because issued tokens and used nonces live in it; its `middleware`
    (a bound method, marked as a new-style aiohttp middleware) runs before every handler.
    """

    def __init__(self, settings: Settings, presigned: PresignedBlobs, grants: Grants) -> None:
        self.settings = settings
        self.presigned = presigned
        self.keys = AuthorizedKeys(settings.authorized_keys_path)
        self.grants = grants

    async def grant(self, request: web.Request) -> Grant | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        grant = await self.grants.lookup(token.strip())
        if grant is None or grant.expires < time.time():
            return None
        return grant

    def challenge(self, request: web.Request) -> web.Response:
        """401 with a realm on exactly the host:port the client used (ollama checks this)."""
        realm = f"{request.scheme}://{request.host}{TOKEN_PATH}"
        ns, model = request.match_info.get("ns"), request.match_info.get("model")
        scope = f"repository:{ns}/{model}:push,pull" if ns and model else "registry:catalog:*"
        response = oci_error_response(UNAUTHORIZED())
        response.headers["WWW-Authenticate"] = f'Bearer realm="{realm}",service="{SERVICE}",scope="{scope}"'
        return response

    async def issue(self, request: web.Request) -> tuple[str, Grant]:
        """Verify a signed token request and return a new token; OciError(401) says why not."""
        now = time.time()
        try:
            ts = int(request.query.get("ts", ""))  # unix seconds, as ollama sends
        except ValueError:
            raise UNAUTHORIZED("missing or invalid ts") from None
        nonce = request.query.get("nonce", "")
        if not 0 < len(nonce) <= 128:
            raise UNAUTHORIZED("missing or invalid nonce")
        if abs(now - ts) > SIGNATURE_WINDOW:
            raise UNAUTHORIZED("signature is stale; check the clocks of both hosts")
        blob = self._verified_key(request)
        line = self.keys.lookup(blob)
        if line is None:
            raise UNAUTHORIZED("key is not in authorized_keys")
        if not await self.grants.use_nonce(blob, nonce, now):
            raise UNAUTHORIZED("nonce already used")
        token, grant = secrets.token_urlsafe(32), Grant(line, now + TOKEN_TTL)
        await self.grants.remember(token, grant)
        return token, grant

    def _verified_key(self, request: web.Request) -> bytes:
        """The signer of `GET,<url>,<zero-sum>`, where <url> is the token URL the client used.

        Both schemes are tried: behind a TLS-terminating proxy the client signed https:// while
        this process sees http://. The signature still binds host, path, `ts` and nonce.
        """
        value = request.headers.get("Authorization", "")
        for scheme in dict.fromkeys((request.scheme, "https", "http")):
            url = f"{scheme}://{request.host}{request.raw_path}"
            try:
                return verify_challenge(value, token_request_data(url))
            except SignatureError as exc:
                error = exc
        raise UNAUTHORIZED(str(error))

    def admin_ok(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = self.settings.admin_token
        return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(
            hashlib.sha256(token.strip().encode()).digest(), hashlib.sha256(expected.encode()).digest()
        )

    async def token(self, request: web.Request) -> web.Response:
        """GET /v2/token: a short-lived token for a signed request from an authorized key."""
        try:
            token, grant = await self.issue(request)
        except OciError as err:
            log.warning("token refused for %s: %s", request.remote, err.message)
            raise
        log.info("token issued to %s", grant.key)
        return web.json_response({
            "token": token,
            "access_token": token,
            "expires_in": int(TOKEN_TTL),
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })

    async def public_key(self, request: web.Request) -> web.Response:
        """GET /api/corral/key: the key this server signs pushes and token requests with. `corral key`
        asks for it, since the CLI may run with another home or models folder than the service."""
        key = await asyncio.to_thread(load_or_create_key, self.settings.key_path)
        return web.json_response({"key": public_key_line(key), "path": str(self.settings.key_path)})

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A token for `/v2` writes (and pulls with CORRAL_PULL_AUTH), the admin token for `/api` writes."""
        settings = self.settings
        path = request.path
        if path.startswith("/v2") and path != TOKEN_PATH:
            needs_token = request.method in WRITE_METHODS or settings.pull_auth
            if needs_token and not self._presigned_read(request) and await self.grant(request) is None:
                return self.challenge(request)
        elif settings.needs_admin_token and _needs_admin(request) and not self.admin_ok(request):
            if not settings.admin_token:
                return api_error_response(403, "this route is disabled: corral listens beyond loopback "
                                               "and CORRAL_ADMIN_TOKEN is not set")
            return api_error_response(401, "unauthorized: this route requires the admin token")
        return await handler(request)

    def _presigned_read(self, request: web.Request) -> bool:
        """A blob GET by a URL this server signed: how ollama fetches a blob's parts, without a token."""
        info = request.match_info
        if request.method != "GET" or "digest" not in info:
            return False
        return self.presigned.admits(f"{info['ns']}/{info['model']}", info["digest"], request.query)


def _needs_admin(request: web.Request) -> bool:
    path = request.path
    if path.startswith("/api/corral/"):
        return not (path == "/api/corral/status" and request.method == "GET")  # a read, as open as /corral
    return path.startswith("/api/") and request.method in WRITE_METHODS and path not in OPEN_API_WRITES
