"""`Egress`: the one check every outbound connection passes, and the only HTTP sessions corral opens.

The rules, built once from the settings:

* **Registries** (manifests, blob HEADs and resolves, token requests, push requests) are the
  configured upstream (CORRAL_UPSTREAM) and the hosts listed in CORRAL_ALLOWED_HOSTS; nothing
  else. With CORRAL_OFFLINE=1 only the listed hosts remain (a corral on the LAN): the default
  upstream and every unlisted host are refused before a socket opens. A listed entry is
  `host[:port]`; without a port it means the scheme's default port.
* **Registry redirects** are followed only on the registry's own origin (scheme, host, port), the
  way credentials may travel: a manifest answered with a 307 to another host is an error, never
  that host's answer. Push follows none (an upload Location on another host is refused too).
* **Data URLs** (where a registry redirects a blob's bytes: registry.ollama.ai's presigned
  object-storage URLs) may be on any host, as long as it is a listed host or every address it
  stands for is public (`addresses.is_public`): an IP literal is checked here, a name when it is
  resolved for the connection (`resolver.GatedResolver`, so a DNS answer that changes between a
  check and the connection cannot slip past). Every further redirect of a data URL is checked the
  same way, at most `MAX_HOPS` of them, and no credentials are ever sent along.
* **Proxies** (HTTPS_PROXY, honoured like ollama's Go transport does) do not bypass any of it: the
  target URL is checked before the request is handed to the proxy. The proxy resolves the target
  itself, so a data URL's name is also resolved and checked here first when a proxy is set; when
  corral cannot resolve it at all, the proxy's own lookup decides.

Refusals are `EgressRefused` exceptions whose message says how to allow the host, and whose
`status` is what corral answers its own client with.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import ResolveResult
from yarl import URL

from registry.config import Settings, SettingsError
from registry.egress.addresses import is_public, kind_of, parse_ip
from registry.egress.resolver import GatedResolver

MAX_HOPS = 5  # redirects followed per request: registry.ollama.ai needs one, Go allows ten
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CREDENTIALS = ("authorization", "cookie", "proxy-authorization")


class EgressRefused(Exception):
    """A connection the gate would not open; the message says why and how to allow it."""

    status = 502  # what corral answers its own client with: the registry sent it somewhere it will not go


class Offline(EgressRefused):
    status = 503

    def __init__(self, host: str) -> None:
        super().__init__(f"corral is offline (CORRAL_OFFLINE=1) and contacts only the hosts listed in "
                         f"CORRAL_ALLOWED_HOSTS; {host} is not one of them (list it there to allow it)")


class HostNotAllowed(EgressRefused):
    status = 400

    def __init__(self, host: str) -> None:
        super().__init__(f"registry host {host!r} is not allowed: corral contacts only its upstream "
                         f"(CORRAL_UPSTREAM) and the hosts listed in CORRAL_ALLOWED_HOSTS; add {host} to "
                         f"CORRAL_ALLOWED_HOSTS to allow it")


class AddressNotAllowed(EgressRefused):
    def __init__(self, host: str, address: str, kind: str) -> None:
        super().__init__(f"{host} is {kind} ({address}): corral follows a registry's redirect to such an "
                         f"address only when {host} is listed in CORRAL_ALLOWED_HOSTS")


class RedirectNotAllowed(EgressRefused):
    """A registry redirected off its own host, or past the hop limit: its answer is not taken."""


@dataclass(frozen=True)
class HostEntry:
    """One `host[:port]` of CORRAL_ALLOWED_HOSTS (or the upstream); port None: the default port."""

    host: str
    port: int | None

    def matches(self, host: str, port: int, scheme: str | None = None) -> bool:
        if self.host != host:
            return False
        if self.port is not None:
            return self.port == port
        return port == _DEFAULT_PORTS[scheme] if scheme in _DEFAULT_PORTS else port in _DEFAULT_PORTS.values()


@dataclass(frozen=True)
class Origin:
    """Where a URL leads: its scheme, its host as the connection will use it, its port."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: URL) -> Origin:
        host = url.raw_host
        if url.scheme not in _DEFAULT_PORTS or not host or url.port is None:
            raise HostNotAllowed(str(url.origin()) if url.absolute else str(url))
        return cls(url.scheme, normal_host(host), url.port)

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def normal_host(host: str) -> str:
    """Lower case, IPv6 without brackets, IP literals in their canonical spelling."""
    ip = parse_ip(host)
    return str(ip) if ip is not None else host.strip("[]").lower()


def parse_entry(entry: str) -> HostEntry:
    """`host`, `host:port`, `[v6]:port`, or a pasted URL (its scheme and path are ignored)."""
    text = entry.strip()
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        port = parts.port
    except ValueError:
        raise SettingsError(f"CORRAL_ALLOWED_HOSTS: bad entry {entry!r}: the port must be a number") from None
    if not parts.hostname or parts.username is not None or any(c.isspace() for c in text):
        raise SettingsError(f"CORRAL_ALLOWED_HOSTS: bad entry {entry!r}: expected host[:port]")
    return HostEntry(normal_host(parts.hostname), port)


def proxy_entry(url: str) -> HostEntry | None:
    """Where a proxy URL (credentials and all) connects to; None for one aiohttp could not use either."""
    parts = urlsplit(url.strip() if "://" in url else f"//{url.strip()}")
    try:
        port = parts.port
    except ValueError:
        return None
    return HostEntry(normal_host(parts.hostname), port) if parts.hostname else None


def environment_proxies() -> tuple[str, ...]:
    """The proxy URLs aiohttp's `trust_env` will use (HTTP_PROXY, HTTPS_PROXY…), read once at startup."""
    return tuple(url for scheme, url in urllib.request.getproxies().items() if scheme in ("http", "https"))


class Egress:
    """The rules (see the module docstring) and the sessions that obey them."""

    def __init__(self, settings: Settings, proxies: Iterable[str] = ()) -> None:
        self.offline = settings.offline
        upstream = Origin.of(URL(settings.upstream))
        self.upstream = HostEntry(upstream.host, upstream.port)
        self.allowed = tuple(parse_entry(entry) for entry in settings.allowed_hosts)
        self.proxies = tuple(entry for url in proxies if (entry := proxy_entry(url)) is not None)

    # ---- the rules ---------------------------------------------------------------------------

    def _reachable(self, host: str, port: int, scheme: str | None = None) -> bool:
        """A listed host: CORRAL_ALLOWED_HOSTS, and the upstream unless offline."""
        listed = self.allowed if self.offline else (self.upstream, *self.allowed)
        return any(entry.matches(host, port, scheme) for entry in listed)

    def check_listed(self, url: str | URL) -> Origin:
        """Refuse a registry that is neither the upstream nor listed, offline or not (a model name's host)."""
        origin = Origin.of(_url(url))
        if not any(e.matches(origin.host, origin.port, origin.scheme) for e in (self.upstream, *self.allowed)):
            raise HostNotAllowed(origin.shown)
        return origin

    def check_registry(self, url: str | URL) -> Origin:
        """Refuse a request to anything but a registry corral may contact now."""
        origin = Origin.of(_url(url))
        if self._reachable(origin.host, origin.port, origin.scheme):
            return origin
        if self.offline:
            raise Offline(origin.shown)
        raise HostNotAllowed(origin.shown)

    async def check_data(self, url: str | URL) -> Origin:
        """Refuse a data URL unless its host is listed or (as far as corral can see) public."""
        origin = Origin.of(_url(url))
        if self._reachable(origin.host, origin.port, origin.scheme):
            return origin
        if self.offline:
            raise Offline(origin.shown)
        ip = parse_ip(origin.host)
        if ip is not None:
            if not is_public(ip):
                raise AddressNotAllowed(origin.shown, str(ip), kind_of(ip))
        elif self.proxies:
            await self._check_name(origin)
        return origin

    async def _check_name(self, origin: Origin) -> None:
        """Behind a proxy the name is resolved by the proxy: look at what it stands for first."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        except OSError:
            return  # corral cannot resolve it; the proxy will, by its own rules
        for info in infos:
            ip = parse_ip(str(info[4][0]))
            if ip is not None and not is_public(ip):
                raise AddressNotAllowed(origin.shown, str(ip), kind_of(ip))

    def screen(self, host: str, port: int, results: list[ResolveResult]) -> list[ResolveResult]:
        """The addresses a connection to `host:port` may use, at the moment it is resolved."""
        name = normal_host(host)
        if self._reachable(name, port) or any(p.matches(name, port) for p in self.proxies):
            return results
        if self.offline:
            raise Offline(f"{host}:{port}")
        public = [r for r in results if (ip := parse_ip(r["host"].split("%")[0])) is not None and is_public(ip)]
        if not public:
            ip = parse_ip(results[0]["host"].split("%")[0]) if results else None
            raise AddressNotAllowed(f"{host}:{port}", results[0]["host"] if results else "no address",
                                    kind_of(ip) if ip is not None else "not a public address")
        return public

    # ---- the sessions and requests -------------------------------------------------------------

    def session(self, *, timeout: aiohttp.ClientTimeout, limit: int = 100,
                read_bufsize: int = 2**16) -> aiohttp.ClientSession:
        """An HTTP session whose every connection resolves names through the gate.

        `trust_env`: HTTPS_PROXY/NO_PROXY apply, as ollama's Go transport honours them; the gate
        checks each URL before the proxy sees it.
        """
        connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, resolver=GatedResolver(self.screen))
        return aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=True, read_bufsize=read_bufsize)

    async def registry_request(self, session: aiohttp.ClientSession, method: str, url: str | URL, *,
                               registry: str | URL, headers: Mapping[str, str] | None = None, data: Any = None,
                               follow: bool = False, auto_decompress: bool = True) -> aiohttp.ClientResponse:
        """A request to the registry at `registry`'s origin; `url` must be on that origin.

        With `follow` (GET and HEAD), redirects on the same origin are followed, as Go's client
        does; one to anywhere else raises `RedirectNotAllowed`. Without it a 3xx is returned.
        """
        home = Origin.of(_url(registry))
        target = _url(url)
        for hop in range(MAX_HOPS + 1):
            if Origin.of(target) != home:
                raise RedirectNotAllowed(
                    f"registry {home.shown} sent corral to {Origin.of(target).shown}, another host: corral follows "
                    f"a registry only on its own host (blob data URLs excepted)")
            self.check_registry(target)
            resp = await session.request(method, target, headers=headers, data=data if hop == 0 else None,
                                         allow_redirects=False, auto_decompress=auto_decompress)
            if not follow or resp.status not in _REDIRECTS or "Location" not in resp.headers:
                return resp
            resp.release()
            target = resp.url.join(URL(resp.headers["Location"]))
        raise RedirectNotAllowed(f"registry {home.shown} redirected {method} {url} more than {MAX_HOPS} times")

    async def data_request(self, session: aiohttp.ClientSession, method: str, url: str | URL, *,
                           headers: Mapping[str, str] | None = None,
                           auto_decompress: bool = True) -> aiohttp.ClientResponse:
        """A request to a blob's data URL: every hop checked, never with credentials."""
        sent = {k: v for k, v in (headers or {}).items() if k.lower() not in _CREDENTIALS}
        target = _url(url)
        for _ in range(MAX_HOPS + 1):
            await self.check_data(target)
            resp = await session.request(method, target, headers=sent, allow_redirects=False,
                                         auto_decompress=auto_decompress)
            if resp.status not in _REDIRECTS or "Location" not in resp.headers:
                return resp
            resp.release()
            target = resp.url.join(URL(resp.headers["Location"]))
            if resp.status == 303 and method != "HEAD":
                method = "GET"
        raise RedirectNotAllowed(f"the data URL {url} redirected more than {MAX_HOPS} times")


def _url(url: str | URL) -> URL:
    return url if isinstance(url, URL) else URL(url)
