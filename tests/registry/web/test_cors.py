"""CORS and the loopback Host guard, with ollama's exact rules (in-process app, no model needed)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from registry.config import SettingsError, load_settings
from registry.server.app import create_app
from registry.web.cors import CorsPolicy

ClientFactory = Callable[..., Awaitable[TestClient]]

PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS",
    "Access-Control-Allow-Headers": (
        "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,X-Stainless-Arch,"
        "X-Stainless-Async,X-Stainless-Custom-Poll-Interval,X-Stainless-Helper-Method,X-Stainless-Lang,"
        "X-Stainless-Os,X-Stainless-Package-Version,X-Stainless-Poll-Helper,X-Stainless-Retry-Count,"
        "X-Stainless-Runtime,X-Stainless-Runtime-Version,X-Stainless-Timeout"
    ),
    "Access-Control-Max-Age": "43200",
}


async def _client(aiohttp_client: ClientFactory, root: Path, **env: str) -> TestClient:
    settings = load_settings(env={
        "OLLAMA_MODELS": str(root / "models"),
        "CORRAL_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'corral.db'}",
        "CORRAL_OFFLINE": "1",
        **env,
    })
    return await aiohttp_client(await create_app(settings))


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type,x-stainless-lang"}


@pytest.mark.parametrize("origin", [
    "http://localhost", "http://localhost:3000", "https://127.0.0.1:8443", "http://0.0.0.0:8080",
    "app://obsidian.md", "file://", "tauri://localhost", "vscode-webview://abc", "https://chat.example.com",
])
async def test_preflight_from_allowed_origin(aiohttp_client: ClientFactory, tmp_path: Path, origin: str) -> None:
    client = await _client(aiohttp_client, tmp_path, OLLAMA_ORIGINS="https://chat.example.com")
    response = await client.options("/v1/chat/completions", headers=_preflight(origin))
    assert response.status == 204
    assert await response.read() == b""
    for name, value in PREFLIGHT_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers.getall("Vary") == ["Origin", "Access-Control-Request-Method",
                                               "Access-Control-Request-Headers"]


@pytest.mark.parametrize("origin", [
    "http://evil.example", "https://chat.example.com.evil.example", "http://localhost.evil.example",
    "null", "chrome-extension://abcdef",
])
async def test_preflight_from_disallowed_origin(aiohttp_client: ClientFactory, tmp_path: Path, origin: str) -> None:
    client = await _client(aiohttp_client, tmp_path, OLLAMA_ORIGINS="https://chat.example.com")
    response = await client.options("/v1/chat/completions", headers=_preflight(origin))
    assert response.status == 403
    assert await response.read() == b""
    assert "Access-Control-Allow-Origin" not in response.headers
    # The actual request is refused the same way, before any handler runs.
    response = await client.get("/api/version", headers={"Origin": origin})
    assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers


async def test_allowed_origin_on_json_error_and_streamed_answers(aiohttp_client: ClientFactory,
                                                                 tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    origin = {"Origin": "http://localhost:5173"}
    for response in (
        await client.get("/api/version", headers=origin),
        await client.get("/v1/models/missing", headers=origin),  # error raised inside the handler
        await client.post("/api/create", json={"model": "x", "from": "missing"}, headers=origin),  # NDJSON
    ):
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173", response.status
        assert response.headers.getall("Vary") == ["Origin"]
    plain = await client.get("/api/version")
    assert "Access-Control-Allow-Origin" not in plain.headers


async def test_wildcard_origin_allows_everyone(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path, OLLAMA_ORIGINS="*")
    response = await client.options("/api/chat", headers=_preflight("https://anywhere.example"))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in response.headers
    response = await client.get("/api/version", headers={"Origin": "https://anywhere.example"})
    assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == "*"


async def test_same_origin_is_not_cross_origin(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    response = await client.get("/api/version", headers={"Origin": "http://corral.lan:11434",
                                                         "Host": "corral.lan:11434"})
    # Same origin passes CORS untouched, then the loopback Host guard refuses the foreign name.
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:11434", 200), ("localhost:11434", 200), ("[::1]:11434", 200), ("192.168.1.20:11434", 200),
    ("10.0.0.7", 200), ("0.0.0.0:11434", 200), ("printer.local", 200), ("box.internal:80", 200),
    ("app.localhost", 200), (f"{socket.gethostname()}:11434", 200),
    ("evil.example", 403), ("evil.example:11434", 403), ("8.8.8.8:11434", 403), ("localhost.evil.example", 403),
])
async def test_host_guard_on_loopback(aiohttp_client: ClientFactory, tmp_path: Path, host: str, status: int) -> None:
    client = await _client(aiohttp_client, tmp_path)
    response = await client.get("/api/version", headers={"Host": host})
    assert response.status == status


async def test_host_guard_answers_options_for_allowed_names(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    assert (await client.options("/api/chat", headers={"Host": "localhost:11434"})).status == 204
    assert (await client.options("/api/chat", headers={"Host": "evil.example"})).status == 403


async def test_no_host_guard_beyond_loopback(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path, OLLAMA_HOST="0.0.0.0:11434")
    response = await client.get("/api/version", headers={"Host": "corral.example.com"})
    assert response.status == 200


@pytest.mark.parametrize("origins", [["chat.example.com"], ["https://*.example.*"]])
def test_invalid_origins_stop_startup(origins: list[str]) -> None:
    """ollama panics on these at startup (gin-contrib/cors Validate); corral refuses to start."""
    with pytest.raises(SettingsError):
        CorsPolicy(origins)


def test_suffix_wildcard_origin() -> None:
    policy = CorsPolicy(["https://*.example.com"])
    assert policy.allows("https://chat.example.com")
    assert not policy.allows("https://example.com.evil")


@pytest.mark.parametrize("origin", [
    "https://evil.com/.example.com", "https://evil.com?.example.com", "https://evil.com#.example.com",
    "https://user@chat.example.com", "https://evil.com:1.example.com", "http://chat.example.com",
    "https://chat.example.com:8443", "https://chat.example.com/",
])
def test_a_wildcard_matches_inside_the_host_only(origin: str) -> None:
    """gin's prefix/suffix match would admit the first ones; the * may only stand for part of the host."""
    policy = CorsPolicy(["https://*.example.com"])
    assert not policy.allows(origin)
    for good in ("https://chat.example.com", "https://a.b.example.com", "HTTPS://Chat.Example.com"):
        assert policy.allows(good)


async def test_evil_origins_are_refused_by_the_server(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path, OLLAMA_ORIGINS="https://*.example.com")
    for origin in ("https://evil.com/.example.com", "https://evil.com?.example.com"):
        response = await client.options("/api/chat", headers=_preflight(origin))
        assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers
    response = await client.options("/api/chat", headers=_preflight("https://chat.example.com"))
    assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"


def test_wildcard_ports_and_schemeless_wildcards() -> None:
    policy = CorsPolicy(["*.corp.example", "https://static.example:*"])
    assert policy.allows("http://app.corp.example") and policy.allows("https://app.corp.example")
    assert not policy.allows("https://evil.example?.corp.example")
    assert policy.allows("https://static.example:8443") and not policy.allows("https://static.example:8443/x")
    assert policy.allows("http://localhost:3000") and not policy.allows("http://localhost:3000@evil.example")


@pytest.mark.parametrize("origins", [["http*://example.com"], ["https://example.com:8*"]])
def test_a_wildcard_outside_host_and_port_stops_startup(origins: list[str]) -> None:
    with pytest.raises(SettingsError, match="part of the host or the port"):
        CorsPolicy(origins)
