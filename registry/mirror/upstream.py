"""The HTTP client for upstream registries (registry.ollama.ai or any Docker distribution registry).

One session for the whole process, made by the egress gate (`registry.egress`). What it does, and why:

* Every request goes through the gate first: a registry request only to the configured upstream
  or a host listed in CORRAL_ALLOWED_HOSTS (only the listed ones when offline), so a model name
  can never point corral at an arbitrary host; a manifest follows redirects only on the
  registry's own host; a blob's data URL (registry.ollama.ai's presigned object-storage URLs)
  may be elsewhere but never on a loopback, private or link-local address unless listed, at
  every hop. A token realm must be on the registry's own host, as ollama checks since v0.14.3.
  The gate's refusals (`EgressRefused`) pass through untouched: they are not worth a retry.
* Manifests are requested with ollama's Accept header and the requesting client's User-Agent,
  because registry.ollama.ai gates models by client version (412 with a readable body, which is
  passed through as `Refused`).
* Blob bytes: the registry's blob URL is resolved once per blob (307 → data URL, or the registry
  serves it itself) and ranges are read from there, straight into the buffers the fill lends
  (`Sink`; `body.open_body` reads the body off the connection once the headers are checked).
  A broken connection, a short body or a stall (no byte for `stall` seconds, ollama's 30 s)
  resumes with `Range` from the last byte received; a data URL that starts refusing (an expired
  presigned URL: 400/401/403/404/410) is dropped and re-resolved. Failures back off
  exponentially; attempts that made progress do not count.
* Every attempt's outcome (an answer, or a failure worth retrying) goes to `health`
  (`mirror.health`), which the status page and /metrics show.
* A 401 with a Bearer challenge gets a token signed with corral's ed25519 key exactly as ollama
  signs it (protocol doc §3.1, `token_client`); tokens are cached per host and repository. A 401
  that remains (a token endpoint refusing corral's key, a challenge corral cannot answer such as
  Basic, a token that does not open the repository) is `Denied`, with the registry's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry import __version__
from registry.auth.token_client import Challenge, TokenError, fetch_token, parse_challenge
from registry.config import Settings
from registry.egress.gate import Egress
from registry.mirror.body import BodyError, describe, open_body
from registry.mirror.health import UpstreamHealth
from registry.model.names import DEFAULT_HOST, Digest, ModelName
from registry.web.errors import registry_reason

log = logging.getLogger("corral.upstream")

OLLAMA_PROTOCOL_VERSION = "0.33.0"  # the ollama release whose wire protocol corral implements (library/handlers.py)
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_EXPIRED_DATA_URL = (400, 401, 403, 404, 410)
_GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

T = TypeVar("T")


class Sink(Protocol):
    """Where a range's bytes go. It lends the buffers they are received into, so that no byte
    is copied in Python on its way from the socket to the disk."""

    async def buffer(self) -> bytearray:
        """A free buffer to receive into (waits while every buffer is busy)."""
        ...

    async def deliver(self, buffer: bytearray, n: int) -> None:
        """`buffer`'s first `n` bytes (possibly none) are the range's next bytes; the buffer is the
        sink's again."""
        ...


def default_user_agent() -> str:
    """ollama's User-Agent shape, so version gates that parse `ollama/<version>` let corral in."""
    arch = _GO_ARCH.get(platform.machine().lower(), platform.machine().lower())
    return f"ollama/{OLLAMA_PROTOCOL_VERSION} ({arch} {sys.platform}) corral/{__version__}"


class UpstreamError(Exception):
    """Base of everything that can go wrong talking to an upstream registry."""


class Unavailable(UpstreamError):
    """No usable answer: DNS, refused connection, timeout, 5xx, 429, a stalled or broken transfer."""

    def __init__(self, base: str, reason: str) -> None:
        super().__init__(f"upstream registry {base} is unavailable: {reason}")


class Refused(UpstreamError):
    """A definitive 4xx answer (404, the 412 version gate, 403…), kept verbatim for pass-through."""

    def __init__(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        text = body.decode("utf-8", "replace").strip()
        super().__init__(f"{status}: {text}" if text else str(status))
        self.status = status
        self.body = body
        self.content_type = content_type


class Denied(Refused):
    """The registry refused corral itself (a 401 corral could not get past), and why.

    Not for passing through as a 401: a client takes a 401 as a challenge to itself (ollama asks
    the realm for a token, and with none fails on an empty realm), so the edges answer a 403 that
    carries this message instead.
    """

    def __init__(self, base: str, reason: str) -> None:
        super().__init__(401, reason.encode())
        self.args = (f"upstream registry {base} refused corral (401): {reason}",)


class _Transient(Exception):
    """A failure worth retrying; becomes `Unavailable` once the attempts are spent."""


@dataclass(frozen=True)
class Endpoint:
    """A registry corral may talk to: `scheme://host[:port]`."""

    base: str

    @property
    def host(self) -> str:
        return urlsplit(self.base).netloc.lower()


@dataclass(frozen=True)
class BlobSource:
    """Where a blob's bytes come from; the fill persists this to resume after a restart."""

    endpoint: Endpoint
    repository: str
    digest: Digest
    user_agent: str

    @property
    def url(self) -> str:
        return f"{self.endpoint.base}/v2/{self.repository}/blobs/{self.digest}"


@dataclass(frozen=True)
class Policy:
    """Timeouts and retries. Defaults follow ollama's downloader; tests shrink them."""

    connect: float = 10.0
    request: float = 60.0  # a whole manifest or token exchange
    stall: float = 30.0  # ollama's downloadStallTimeout
    request_attempts: int = 3  # manifests: fail fast so stale-if-error can answer
    blob_attempts: int = 6  # ollama's maxRetries per part; attempts with progress are free
    backoff: float = 0.5
    max_backoff: float = 16.0

    def delay(self, failures: int) -> float:
        return min(self.backoff * 2 ** (failures - 1), self.max_backoff)


class RateLimit:
    """CORRAL_UPSTREAM_RATE: one virtual clock shared by every fill, with a quarter second of burst."""

    def __init__(self, rate: int, burst: float = 0.25) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = 0.0
        self.taken = 0  # every blob byte from upstream passes here: /metrics reports it

    def quantum(self, buffer: int) -> int:
        """Bytes to receive between two takes: a whole buffer, unless that exceeds the burst."""
        return buffer if self.rate <= 0 else max(min(buffer, int(self.rate * self.burst)), 64 * 1024)

    async def take(self, n: int) -> None:
        self.taken += n
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._clock = max(self._clock, now - self.burst) + n / self.rate
        if self._clock > now:
            await asyncio.sleep(self._clock - now)


@dataclass
class _Cursor:
    pos: int


class Upstream:
    def __init__(self, settings: Settings, key: Ed25519PrivateKey, egress: Egress,
                 policy: Policy | None = None) -> None:
        self.key = key  # corral's id_ed25519: signs token requests as ollama's key would
        self.egress = egress
        self.policy = policy or Policy()
        self.default = Endpoint(settings.upstream)
        self.rate = RateLimit(settings.upstream_rate)
        self.health = UpstreamHealth()
        self._aliases = {DEFAULT_HOST, self.default.host}
        self._tokens: dict[tuple[str, str], str] = {}
        # where each blob's bytes are read from; None: the registry serves the blob itself
        self._data_urls: dict[BlobSource, str | None] = {}
        self._resolving: dict[BlobSource, asyncio.Lock] = {}
        self._session = egress.session(
            timeout=aiohttp.ClientTimeout(total=None, connect=self.policy.connect),
            limit=256,
            read_bufsize=256 * 1024,  # per-connection buffer: 16 segments × 8 fills must stay small
        )

    async def close(self) -> None:
        await self._session.close()

    # ---- policy ------------------------------------------------------------------------------

    def endpoint_for(self, name: ModelName, insecure: bool = False) -> Endpoint:
        """The registry a name is fetched from, or the gate's HostNotAllowed — before any connection.

        registry.ollama.ai (the default host of every short name) and the upstream's own host
        mean CORRAL_UPSTREAM, scheme included. A host from CORRAL_ALLOWED_HOSTS is reached over
        https, or http when the pull says `insecure`, exactly as ollama decides. Whether the
        registry may be contacted right now (offline) is the gate's question at each request.
        """
        host = name.host.lower()
        if host in self._aliases:
            return self.default
        endpoint = Endpoint(f"{'http' if insecure else 'https'}://{host}")
        self.egress.check_listed(endpoint.base)
        return endpoint

    def check(self, endpoint: Endpoint) -> None:
        """Raise the gate's refusal if `endpoint` may not be contacted now (offline, not listed)."""
        self.egress.check_registry(endpoint.base)

    # ---- manifests ---------------------------------------------------------------------------

    async def fetch_manifest(self, endpoint: Endpoint, repository: str, reference: str, user_agent: str,
                             *, attempts: int | None = None) -> bytes:
        """GET a manifest's raw bytes (tag or digest reference)."""
        url = f"{endpoint.base}/v2/{repository}/manifests/{reference}"

        async def once() -> bytes:
            resp = await self._registry(endpoint, repository, "GET", url, user_agent, {"Accept": MANIFEST_ACCEPT})
            async with resp:
                if resp.status != 200:
                    await self._raise_for(resp)
                try:
                    async with asyncio.timeout(self.policy.stall):
                        body = await _read_body(resp, MAX_MANIFEST_BYTES + 1)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    raise _Transient(describe(exc)) from exc
                if len(body) > MAX_MANIFEST_BYTES:
                    raise Unavailable(endpoint.base, f"{url}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
                return body

        return await self._retrying(endpoint, once, attempts or self.policy.request_attempts)

    # ---- blobs -------------------------------------------------------------------------------

    async def fetch_range(self, source: BlobSource, start: int, end: int, sink: Sink) -> None:
        """Deliver bytes [start, end) of a blob to `sink`, in order, resuming until all arrived.

        Raises Refused (the blob is unknown upstream, access denied) or Unavailable (attempts
        without progress exhausted). Exceptions raised by `sink` propagate untouched.
        """
        cursor = _Cursor(start)
        failures = 0
        while cursor.pos < end:
            before = cursor.pos
            try:
                with self._contact(source.endpoint):
                    await self._fetch_once(source, cursor, end, sink)
            except _Transient as exc:
                failures = 1 if cursor.pos > before else failures + 1
                if failures >= self.policy.blob_attempts:
                    raise Unavailable(source.endpoint.base, f"{source.digest}: {exc}") from None
                delay = self.policy.delay(failures)
                log.warning("%s bytes %d-%d: %s; resuming at %d in %.1fs", source.digest.short, start, end - 1,
                            exc, cursor.pos, delay)
                await asyncio.sleep(delay)

    def forget(self, source: BlobSource) -> None:
        """Drop the cached data URL of a blob whose fill ended."""
        self._data_urls.pop(source, None)
        self._resolving.pop(source, None)

    async def _fetch_once(self, source: BlobSource, cursor: _Cursor, end: int, sink: Sink) -> None:
        resp = await self._open_data(source, cursor.pos, end)
        self.health.answered(source.endpoint.base)  # now, not when the transfer ends minutes later
        async with resp:
            await self._pump(resp, cursor, end, sink)

    async def _open_data(self, source: BlobSource, pos: int, end: int) -> aiohttp.ClientResponse:
        """A response whose body starts at byte `pos`, from the cached data URL or a fresh resolve."""
        headers = {"Range": f"bytes={pos}-{end - 1}", "Accept-Encoding": "identity"}
        if source not in self._data_urls:
            async with self._resolving.setdefault(source, asyncio.Lock()):
                if source not in self._data_urls:
                    resp = await self._registry(source.endpoint, source.repository, "GET", source.url,
                                                source.user_agent, headers, follow=False)
                    if resp.status not in _REDIRECTS or "Location" not in resp.headers:
                        self._data_urls[source] = None
                        return await self._expect_range(resp, pos)
                    resp.release()
                    self._data_urls[source] = urljoin(str(resp.url), resp.headers["Location"])
        data_url = self._data_urls[source]
        if data_url is None:
            resp = await self._registry(source.endpoint, source.repository, "GET", source.url, source.user_agent,
                                        headers, follow=False)
            return await self._expect_range(resp, pos)
        resp = await self._data("GET", data_url, source.user_agent, headers)
        if resp.status in _EXPIRED_DATA_URL:
            resp.release()
            if self._data_urls.get(source) == data_url:
                del self._data_urls[source]
            raise _Transient(f"data URL answered {resp.status} (expired?); resolving it again")
        return await self._expect_range(resp, pos)

    async def _expect_range(self, resp: aiohttp.ClientResponse, pos: int) -> aiohttp.ClientResponse:
        if resp.status == 206:
            match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == pos:
                return resp
            resp.release()
            raise _Transient(f"206 for the wrong range ({resp.headers.get('Content-Range')!r}, wanted {pos}-)")
        if resp.status == 200 and pos == 0:
            return resp  # a server without Range support; only the first bytes of the body are used
        async with resp:
            if resp.status == 200:
                raise _Transient("upstream ignored the Range header")
            await self._raise_for(resp)
        raise AssertionError("unreachable")

    async def _pump(self, resp: aiohttp.ClientResponse, cursor: _Cursor, end: int, sink: Sink) -> None:
        """Receive the body into the sink's buffers; a failure keeps every byte already received."""
        body = open_body(resp, end - cursor.pos, self.policy.stall)
        try:
            while cursor.pos < end:
                buffer = await sink.buffer()
                want = min(len(buffer), end - cursor.pos, self.rate.quantum(len(buffer)))
                try:
                    n = await body.read_into(memoryview(buffer)[:want])
                except BodyError as exc:
                    await sink.deliver(buffer, 0)
                    raise _Transient(str(exc)) from None
                await self.rate.take(n)
                await sink.deliver(buffer, n)
                cursor.pos += n
                if n < want and body.exhausted:
                    raise _Transient(f"connection closed {end - cursor.pos} bytes early")
        finally:
            body.close()

    # ---- plumbing ----------------------------------------------------------------------------

    async def _retrying(self, endpoint: Endpoint, op: Callable[[], Awaitable[T]], attempts: int) -> T:
        for failure in range(1, attempts + 1):
            try:
                with self._contact(endpoint):
                    return await op()
            except _Transient as exc:
                if failure == attempts:
                    raise Unavailable(endpoint.base, str(exc)) from None
                delay = self.policy.delay(failure)
                log.warning("%s: %s; retrying in %.1fs", endpoint.base, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _contact(self, endpoint: Endpoint) -> Iterator[None]:
        """Record one attempt's outcome in `health`: an answer (a refusal is one too) or a failure."""
        try:
            yield
        except _Transient as exc:
            self.health.failed(endpoint.base, str(exc))
            raise
        except Refused:
            self.health.answered(endpoint.base)
            raise
        self.health.answered(endpoint.base)

    async def _registry(
        self,
        endpoint: Endpoint,
        repository: str,
        method: str,
        url: str,
        user_agent: str,
        headers: dict[str, str] | None = None,
        *,
        follow: bool = True,
    ) -> aiohttp.ClientResponse:
        """A request to the registry itself, through the gate: Bearer token on 401 (twice at most);
        with `follow`, redirects on the registry's own host only."""
        key = (endpoint.host, repository)
        for attempt in range(2):
            sent = {"User-Agent": user_agent, **(headers or {})}
            if key in self._tokens:
                sent["Authorization"] = f"Bearer {self._tokens[key]}"
            resp = await self._send(self.egress.registry_request(
                self._session, method, url, registry=endpoint.base, headers=sent, follow=follow,
                auto_decompress="Range" not in sent))
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            if resp.status != 401 or attempt == 1 or challenge is None:
                return resp
            resp.release()
            self._tokens[key] = await self._token(endpoint, challenge)
        raise AssertionError("unreachable")

    async def _token(self, endpoint: Endpoint, challenge: Challenge) -> str:
        """ollama's token dance (signed with corral's key); the realm must be the registry's host."""
        try:
            async with asyncio.timeout(self.policy.request):
                return await fetch_token(self._session, challenge, endpoint.host, self.key, self.egress)
        except TokenError as exc:
            raise Denied(endpoint.base, f"its token endpoint refused corral's key ({exc}); `corral key` prints "
                                        "the key it signs with") from None
        except TimeoutError as exc:
            raise _Transient(f"token request: no response within {self.policy.request:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _Transient(f"token request: {describe(exc)}") from exc

    async def _data(self, method: str, url: str, user_agent: str,
                    headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """A request to a data URL the registry redirected to: no credentials, every hop through the gate."""
        sent = {"User-Agent": user_agent, **(headers or {})}
        return await self._send(self.egress.data_request(self._session, method, url, headers=sent,
                                                         auto_decompress="Range" not in sent))

    async def _send(self, request: Awaitable[aiohttp.ClientResponse]) -> aiohttp.ClientResponse:
        """Await a gated request; transport failures become _Transient, the gate's refusals pass."""
        try:
            async with asyncio.timeout(self.policy.request):
                return await request
        except TimeoutError as exc:
            raise _Transient(f"no response within {self.policy.request:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _Transient(describe(exc)) from exc

    async def _raise_for(self, resp: aiohttp.ClientResponse) -> None:
        """Turn a non-success status into _Transient (5xx, 429, 408) or Refused (other 4xx)."""
        try:
            async with asyncio.timeout(self.policy.stall):
                body = await _read_body(resp, 64 * 1024)
        except (aiohttp.ClientError, OSError, TimeoutError):
            body = b""
        if resp.status >= 500 or resp.status in (408, 429):
            raise _Transient(f"{resp.status}: {body.decode('utf-8', 'replace').strip()[:200]}")
        if resp.status == 401:
            raise Denied(str(resp.url.origin()), _unauthorized(resp.headers.get("WWW-Authenticate", ""), body))
        raise Refused(resp.status, body, resp.headers.get("Content-Type", "text/plain"))


def _unauthorized(challenge: str, body: bytes) -> str:
    """Why a 401 stayed a 401: the registry's words, and the scheme it wanted when corral cannot answer it."""
    reason = registry_reason(body)
    scheme = challenge.strip().partition(" ")[0]
    if scheme and scheme.lower() != "bearer":
        return f"{reason} (it asks for {scheme} credentials; corral answers only ollama's signed Bearer tokens)"
    return reason


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of a body (StreamReader.read(n) returns whatever is buffered)."""
    body = bytearray()
    while len(body) < limit and (chunk := await resp.content.read(limit - len(body))):
        body += chunk
    return bytes(body)

