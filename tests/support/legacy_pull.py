"""A test-side client that pulls exactly like ollama's legacy downloader (server/download.go).

Sequence per the protocol doc §1.1: manifest GET with ollama's Accept and User-Agent; per layer
HEAD for the size (Content-Length only), a GET without Range that must answer 200/307 with a
`Location` (followed only to the same hostname), then parallel `Range` parts against that URL
with Go's default User-Agent and no status check, written at their offsets; sha256 at the end.

Credentials as ollama's makeRequestWithRetry handles them: the manifest GET, the HEAD and the
resolve GET carry the pull's token once it has one; any 401 is taken as a challenge and answered
by a token request signed with `key` (ollama's ~/.ollama/id_ed25519, which always exists: a
fresh one when none is given), with the realm, service and scope read as Go's parseRegistryChallenge
reads them, "" when absent; the realm must be on the same host:port, so a 401 without a Bearer
challenge fails there; a refused token request fails the pull with the token endpoint's answer,
and a second 401 with "unauthorized: access denied". Errors of the manifest GET are prefixed
"pull model manifest: " as PullModel wraps them. The parts go out like Go's http.DefaultClient:
no Authorization, whatever the registry asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.auth.keys import sign_challenge, token_request_data
from registry.auth.token_client import Challenge, token_url
from tests.support.digests import sha256_file

OLLAMA_UA = "ollama/0.33.0 (amd64 linux) Go/go1.24.0"
GO_UA = "Go-http-client/1.1"
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
MIN_PART = 100_000_000
MAX_PART = 1_000_000_000
PARTS = 16


class PullError(Exception):
    pass


def part_ranges(total: int, min_part: int = MIN_PART, max_part: int = MAX_PART) -> list[tuple[int, int]]:
    """ollama's split: size = clamp(total/16, min, max); ceil(total/size) parts, last one shorter."""
    size = min(max(total // PARTS, min_part), max_part)
    return [(off, min(size, total - off)) for off in range(0, total, size)]


@dataclass
class PulledModel:
    manifest_raw: bytes
    blobs: dict[str, Path] = field(default_factory=dict)
    range_requests: int = 0
    data_urls: list[str] = field(default_factory=list)  # where each blob's parts were fetched from


class LegacyPuller:
    def __init__(self, base_url: str, dest: Path, *, min_part: int = MIN_PART, concurrency: int = PARTS,
                 key: Ed25519PrivateKey | None = None, user_agent: str = OLLAMA_UA) -> None:
        self.base = base_url.rstrip("/")
        self.dest = dest
        self.min_part = min_part
        self.concurrency = concurrency
        self.key = key or Ed25519PrivateKey.generate()  # ollama's ~/.ollama/id_ed25519
        self.user_agent = user_agent  # an older ollama's, to meet registry.ollama.ai's version gate
        self.token = ""  # regOpts.Token: set by a 401, sent on every later registry request
        dest.mkdir(parents=True, exist_ok=True)

    async def pull(self, repository: str, tag: str) -> PulledModel:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), follow_redirects=False) as client:
            try:
                r = await self._registry(client, "GET", f"{self.base}/v2/{repository}/manifests/{tag}",
                                         {"Accept": MANIFEST_ACCEPT})
            except PullError as exc:
                raise PullError(f"pull model manifest: {exc}") from None
            await r.aread()
            if r.status_code == 404:
                raise PullError("pull model manifest: file does not exist")
            if r.status_code >= 400:
                raise PullError(f"pull model manifest: {r.status_code}: {r.text}")
            manifest = json.loads(r.content)
            result = PulledModel(manifest_raw=r.content)
            layers = [*manifest["layers"], manifest["config"]]
            for layer in layers:  # ollama fetches layers one after another
                path, ranges, direct = await self._blob(client, repository, layer["digest"])
                result.blobs[layer["digest"]] = path
                result.range_requests += ranges
                result.data_urls.append(direct)
            return result

    async def _registry(self, client: httpx.AsyncClient, method: str, url: str,
                        headers: dict[str, str] | None = None, *, follow_redirects: bool = False) -> httpx.Response:
        """makeRequestWithRetry: two rounds, the second after answering a 401 with a token.

        The response is streamed: the caller reads the body or, like the resolve GET, drops it.
        """
        for _ in range(2):
            sent = {**(headers or {}), "User-Agent": self.user_agent}
            if self.token:
                sent["Authorization"] = f"Bearer {self.token}"
            resp = await client.send(client.build_request(method, url, headers=sent), stream=True,
                                     follow_redirects=follow_redirects)
            if resp.status_code != 401:
                return resp
            await resp.aclose()
            self.token = await self._fetch_token(client, resp.headers.get("WWW-Authenticate", ""), url)
        raise PullError("unauthorized: access denied")

    async def _fetch_token(self, client: httpx.AsyncClient, header: str, url: str) -> str:
        """getAuthorizationToken: a token request signed with the key, on the original host only."""
        values = header.removeprefix("Bearer ")
        challenge = Challenge(*(_go_value(values, key) for key in ("realm", "service", "scope")))
        request_url = token_url(challenge)
        realm_host, original_host = urlsplit(request_url).netloc, urlsplit(url).netloc
        if realm_host != original_host:
            raise PullError(f'realm host "{realm_host}" does not match original host "{original_host}"')
        resp = await client.get(request_url, headers={
            "Authorization": sign_challenge(self.key, token_request_data(request_url)), "User-Agent": self.user_agent})
        if resp.status_code >= 400:
            raise PullError(f"{resp.status_code}: {resp.text}" if resp.content else str(resp.status_code))
        return resp.json()["token"]

    async def _blob(self, client: httpx.AsyncClient, repository: str, digest: str) -> tuple[Path, int, str]:
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        head = await self._registry(client, "HEAD", url, follow_redirects=True)
        await head.aclose()
        if head.status_code >= 400:
            raise PullError(f"HEAD {digest}: {head.status_code}")
        total = int(head.headers.get("Content-Length", "0"))
        direct = await self._resolve(client, url)
        target = self.dest / digest.replace(":", "-")
        await asyncio.to_thread(_allocate, target, total)
        sem = asyncio.Semaphore(self.concurrency)
        ranges = part_ranges(total, self.min_part) if total else []

        async def fetch(offset: int, size: int) -> None:
            async with sem, client.stream("GET", direct, headers={
                "User-Agent": GO_UA, "Range": f"bytes={offset}-{offset + size - 1}"
            }, follow_redirects=True) as resp:
                written = 0
                fd = os.open(target, os.O_WRONLY)
                try:
                    async for chunk in resp.aiter_bytes():
                        chunk = chunk[: size - written]
                        os.pwrite(fd, chunk, offset + written)
                        written += len(chunk)
                        if written >= size:
                            break
                finally:
                    os.close(fd)

        await asyncio.gather(*(fetch(o, s) for o, s in ranges))
        actual = await asyncio.to_thread(sha256_file, target)
        if actual != digest:
            target.unlink()
            raise PullError(f"digest mismatch, file must be downloaded again: want {digest}, got {actual}")
        return target, len(ranges), direct

    async def _resolve(self, client: httpx.AsyncClient, url: str) -> str:
        """The direct-URL step: follow redirects only within the same hostname, need a Location."""
        host = urlsplit(url).hostname
        for _ in range(10):
            resp = await self._registry(client, "GET", url)
            await resp.aclose()  # the body is never read: the connection is dropped after the headers
            location = resp.headers.get("Location")
            status = resp.status_code
            if status in (301, 302, 303, 307, 308) and location:
                nxt = urljoin(url, location)
                if urlsplit(nxt).hostname != host:
                    if status != 307:
                        raise PullError(f"unexpected status code {status}")
                    return nxt
                url = nxt
                continue
            if status not in (200, 307):
                raise PullError(f"unexpected status code {status}")
            if not location:
                raise PullError("http: no Location header in response")
            return urljoin(url, location)
        raise PullError("stopped after 10 redirects")


def _go_value(header: str, key: str) -> str:
    """ollama's getValue: what follows `key="` up to a quote that ends the header or precedes a comma."""
    start = header.find(key + "=")
    if start == -1:
        return ""
    start += len(key) + 2
    end = start
    while end < len(header):
        if header[end] == '"':
            if end + 1 < len(header) and header[end + 1] != ",":
                end += 1
                continue
            break
        end += 1
    return header[start:end]


def _allocate(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
