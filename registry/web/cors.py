"""Browser-facing guards, exactly as ollama's router sets them up (server/routes.go GenerateRoutes).

Two middlewares, in ollama's order:

* CORS (gin-contrib/cors v1.7.2 with ollama's config): origins from OLLAMA_ORIGINS plus the
  localhost/127.0.0.1/0.0.0.0 (any port, http and https), app://, file://, tauri://,
  vscode-webview:// and vscode-file:// defaults. A request whose Origin is not allowed gets an
  empty 403; an allowed preflight (OPTIONS) is answered 204 by the middleware itself; an allowed
  request gets `Access-Control-Allow-Origin` and `Vary` on whatever response it ends up with.
  One deliberate difference: gin matches a `*` as a plain prefix and suffix of the whole string,
  so `https://*.example.com` admits `https://evil.com/.example.com`. Here a wildcard origin
  matches only an origin that is exactly `scheme://host[:port]`, and its `*` stands for part of
  the host (letters, digits, `-`, `.`, `_`) or for the whole port, never for anything else.
* The Host guard (allowedHostsMiddleware), only when listening on loopback: a web page on some
  other site could otherwise reach the local server through DNS rebinding. Host headers naming a
  loopback/private/unspecified/local-interface IP, localhost, this machine's hostname or a
  *.localhost/*.local/*.internal name pass; anything else is an empty 403.

CORS headers are added in `on_response_prepare`, so streamed responses (prepared inside the
handler) and error responses made by outer middlewares carry them too.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import re
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from registry.config import Settings, SettingsError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

_SCHEMES = ("http://", "https://", "chrome-extension://", "safari-extension://", "moz-extension://",
            "ms-browser-extension://")  # gin-contrib/cors default + AllowBrowserExtensions schemes
_ALLOW_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
_ALLOW_HEADERS = ",".join((
    "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With",
    # OpenAI SDK headers, spelled as Go's http.CanonicalHeaderKey writes them
    "Openai-Beta", "X-Stainless-Arch", "X-Stainless-Async", "X-Stainless-Custom-Poll-Interval",
    "X-Stainless-Helper-Method", "X-Stainless-Lang", "X-Stainless-Os", "X-Stainless-Package-Version",
    "X-Stainless-Poll-Helper", "X-Stainless-Retry-Count", "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version", "X-Stainless-Timeout",
))
_MAX_AGE = str(12 * 3600)
_LOCAL_TLDS = (".localhost", ".local", ".internal")
_GO_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_ALLOW_ORIGIN: web.RequestKey[str] = web.RequestKey("cors_allow_origin", str)  # value for the answer
_HOST_CHARS = "[a-z0-9._-]"


def default_origins() -> list[str]:
    """envconfig.AllowedOrigins' built-in list, appended after the OLLAMA_ORIGINS entries."""
    origins = []
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        origins += [f"http://{host}", f"https://{host}", f"http://{host}:*", f"https://{host}:*"]
    return [*origins, "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]


class CorsPolicy:
    """Which origins may call the API: gin-contrib/cors's rules, with a `*` kept inside the host or port."""

    def __init__(self, extra_origins: Sequence[str]) -> None:
        origins = [*extra_origins, *default_origins()]
        for origin in origins:
            if "*" not in origin and not origin.startswith(_SCHEMES):
                raise SettingsError(
                    f"OLLAMA_ORIGINS: bad origin {origin!r}: origins must contain '*' or include "
                    + ",".join(_SCHEMES)
                )
            if origin.count("*") > 1:
                raise SettingsError(f"OLLAMA_ORIGINS: bad origin {origin!r}: only one * is allowed")
        self.allow_all = "*" in origins
        self._exact = {o.strip().lower() for o in origins}
        self._wildcards = [_wildcard(o.strip().lower()) for o in origins if "*" in o and o.strip() != "*"]

    def allows(self, origin: str) -> bool:
        if self.allow_all or origin in self._exact:
            return True
        return any(rule.fullmatch(origin.lower()) for rule in self._wildcards)


def _wildcard(origin: str) -> re.Pattern[str]:
    """A wildcard origin as a pattern over `scheme://host[:port]`, its `*` kept inside the host or port.

    `https://*.example.com` → any subdomain over https; `http://localhost:*` → any port;
    `*.example.com` (no scheme) → a subdomain under any scheme; `app://*` → any app:// host.
    """
    scheme, sep, rest = origin.rpartition("://")
    if "*" in scheme:
        raise SettingsError(f"OLLAMA_ORIGINS: bad origin {origin!r}: a * may stand for part of the host or the port")
    host, colon, port = rest.rpartition(":") if ":" in rest and not rest.endswith("]") else (rest, "", "")
    if colon and port != "*" and not port.isdigit():
        raise SettingsError(f"OLLAMA_ORIGINS: bad origin {origin!r}: a * may stand for part of the host or the port")
    scheme_part = re.escape(scheme) if sep and scheme else "[a-z][a-z0-9+.-]*"
    host_part = f"{_HOST_CHARS}*".join(re.escape(piece) for piece in host.split("*"))
    port_part = ("(?::[0-9]+)" if port == "*" else f":{re.escape(port)}") if colon else ""
    return re.compile(f"{scheme_part}://{host_part}{port_part}")


def cors_middleware(policy: CorsPolicy) -> Middleware:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        host = request.headers.get("Host", "")
        if not origin or origin in (f"http://{host}", f"https://{host}"):
            return await handler(request)  # not a cross-origin request
        if not policy.allows(origin):
            return web.Response(status=403)
        request[_ALLOW_ORIGIN] = "*" if policy.allow_all else origin
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=_preflight_headers(policy, origin))
        return await handler(request)

    return cors


def _preflight_headers(policy: CorsPolicy, origin: str) -> list[tuple[str, str]]:
    headers = [
        ("Access-Control-Allow-Methods", _ALLOW_METHODS),
        ("Access-Control-Allow-Headers", _ALLOW_HEADERS),
        ("Access-Control-Max-Age", _MAX_AGE),
    ]
    if policy.allow_all:
        return [*headers, ("Access-Control-Allow-Origin", "*")]
    vary = [("Vary", v) for v in ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")]
    return [*headers, *vary, ("Access-Control-Allow-Origin", origin)]


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: what an allowed non-preflight request gets on its answer."""
    allowed = request.get(_ALLOW_ORIGIN)
    if allowed is None or request.method == "OPTIONS":
        return
    if allowed != "*" and "Origin" not in response.headers.getall("Vary", ()):
        response.headers.add("Vary", "Origin")
    response.headers["Access-Control-Allow-Origin"] = allowed


# ----------------------------------------------------------------- Host guard


def _split_host(hostport: str) -> str:
    """The host part as Go's net.SplitHostPort gives it, or the whole value where Go reports an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end != -1 and hostport[end + 1 : end + 2] == ":":
            return hostport[1:end]
        return hostport
    if hostport.count(":") == 1:
        return hostport.split(":")[0]
    return hostport


def _is_go_private(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """netip.Addr.IsPrivate: RFC 1918 and fc00::/7 only (Python's is_private is much wider)."""
    return any(ip in network for network in _GO_PRIVATE if network.version == ip.version)


def _interface_addresses() -> set[str]:
    """Addresses assigned to this machine's interfaces (ollama's isLocalIP), best effort on Linux."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]).split("%")[0])
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                request = struct.pack("256s", name.encode()[:15])
                found.add(socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x8915, request)[20:24]))  # SIOCGIFADDR
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    return found


def _ip_host_allowed(host: str) -> bool:
    """An IP Host header passes when it is loopback, private, unspecified or one of ours."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    plain = (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip
    if plain.is_loopback or _is_go_private(plain) or plain.is_unspecified:
        return True
    return str(ip).split("%")[0] in _interface_addresses()


def _named_host_allowed(host: str) -> bool:
    host = host.lower()
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    return host.endswith(_LOCAL_TLDS)


def host_guard_middleware() -> Middleware:
    @web.middleware
    async def host_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = _split_host(request.headers.get("Host", ""))
        if _ip_host_allowed(host):
            return await handler(request)
        if not _named_host_allowed(host):
            return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response(status=204)  # ollama answers OPTIONS for an allowed name itself
        return await handler(request)

    return host_guard


def middlewares(settings: Settings) -> list[Middleware]:
    """The guards for create_app's middleware list: CORS always, the Host guard on loopback only.

    Pair with `app.on_response_prepare.append(add_cors_headers)`.
    """
    guards = [cors_middleware(CorsPolicy(settings.origins))]
    if settings.host.is_loopback:
        guards.append(host_guard_middleware())
    return guards
