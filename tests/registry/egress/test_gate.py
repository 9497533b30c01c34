"""The egress gate on its own: the rules, and requests over real loopback sockets.

Addresses corral must not contact are recording listeners (`tests/support/listener.py`): a
refusal "before a socket opens" is proven by their accept count staying 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.auth.token_client import Challenge, TokenError, fetch_token
from registry.config import SettingsError
from registry.egress.gate import (
    MAX_HOPS,
    AddressNotAllowed,
    Egress,
    HostNotAllowed,
    Offline,
    RedirectNotAllowed,
    environment_proxies,
)
from tests.support.listener import RecordingListener
from tests.support.mirror import mirror_settings

ServerFactory = Callable[..., Awaitable[TestServer]]
TIMEOUT = aiohttp.ClientTimeout(total=10)


def gate(tmp_path: Path, upstream: str = "https://registry.ollama.ai", proxies: tuple[str, ...] = (),
         **env: str) -> Egress:
    return Egress(mirror_settings(tmp_path, upstream, **env), proxies)


@pytest.fixture
async def listener() -> AsyncIterator[RecordingListener]:
    recording = await RecordingListener().start()
    yield recording
    await recording.close()


@pytest.fixture
async def hops(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[TestServer, list[web.Request]]]:
    """A loopback server whose /to?url=… answers 302 to that URL and /loop redirects to itself."""
    seen: list[web.Request] = []

    async def to(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(status=302, headers={"Location": request.query["url"]})

    async def loop(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(status=307, headers={"Location": "/loop"})

    async def ok(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.get("/to", to), web.get("/loop", loop), web.get("/ok", ok)])
    yield await aiohttp_server(app), seen


# ---- the rules ---------------------------------------------------------------------------------

def test_registries_are_the_upstream_and_the_listed_hosts(tmp_path: Path) -> None:
    egress = gate(tmp_path, "http://up.example:8080",
                  CORRAL_ALLOWED_HOSTS="corral.lan:11434, peer.lan,[fd00::5]:5000,https://pasted.example:8443/")
    for url in ("http://up.example:8080/v2/library/m/manifests/latest", "https://corral.lan:11434/v2/",
                "https://peer.lan/v2/", "http://peer.lan/v2/", "https://peer.lan:443/v2/", "http://[fd00::5]:5000/v2/",
                "https://PEER.LAN/v2/", "https://pasted.example:8443/v2/"):
        egress.check_registry(url)
    for url in ("http://up.example:8081/v2/", "https://up.example/v2/", "https://corral.lan/v2/",
                "https://peer.lan:8443/v2/", "http://evil.example/v2/", "http://169.254.169.254/latest/meta-data",
                "ftp://up.example:8080/", "https://corral.lan.evil.example:11434/"):
        with pytest.raises(HostNotAllowed):
            egress.check_registry(url)
    with pytest.raises(HostNotAllowed) as refused:
        egress.check_registry("https://evil.example/v2/")
    assert "evil.example" in str(refused.value) and "add evil.example to CORRAL_ALLOWED_HOSTS" in str(refused.value)
    assert refused.value.status == 400


def test_offline_leaves_only_the_listed_hosts(tmp_path: Path) -> None:
    egress = gate(tmp_path, "http://up.example:8080", CORRAL_OFFLINE="1", CORRAL_ALLOWED_HOSTS="corral.lan:11434")
    egress.check_registry("https://corral.lan:11434/v2/")
    for url in ("http://up.example:8080/v2/", "https://registry.ollama.ai/v2/", "http://evil.example/"):
        with pytest.raises(Offline) as refused:
            egress.check_registry(url)
        assert "CORRAL_OFFLINE=1" in str(refused.value) and "CORRAL_ALLOWED_HOSTS" in str(refused.value)
        assert refused.value.status == 503
    egress.check_listed("http://up.example:8080/")  # still the registry short names map to
    with pytest.raises(HostNotAllowed):
        egress.check_listed("http://evil.example/")
    listed_upstream = gate(tmp_path, "http://peer.lan:11434", CORRAL_OFFLINE="1",
                           CORRAL_ALLOWED_HOSTS="peer.lan:11434")
    listed_upstream.check_registry("http://peer.lan:11434/v2/")  # an upstream on the LAN, listed, stays usable


@pytest.mark.parametrize("entry", ["host:port", "a b:1", "user@host:1", ":80", "host:99999"])
def test_bad_allowed_hosts_entries_stop_startup(tmp_path: Path, entry: str) -> None:
    with pytest.raises(SettingsError, match="CORRAL_ALLOWED_HOSTS"):
        gate(tmp_path, CORRAL_ALLOWED_HOSTS=entry)


async def test_data_urls_may_be_public_or_listed_but_not_local(tmp_path: Path) -> None:
    egress = gate(tmp_path, CORRAL_ALLOWED_HOSTS="127.0.0.1:5000,cdn.lan")
    await egress.check_data("https://104.16.1.1/blob")
    await egress.check_data("https://[2606:4700::1111]/blob")
    await egress.check_data("https://bucket.r2.cloudflarestorage.com/blob")  # a name: checked when resolved
    await egress.check_data("http://127.0.0.1:5000/blob")  # listed
    await egress.check_data("https://cdn.lan/blob")
    for url in ("http://127.0.0.1:5001/blob", "http://[::1]:5000/", "http://169.254.169.254/latest/meta-data",
                "http://10.0.0.8/", "http://2130706433:5001/", "http://0x7f.1/", "http://[::ffff:127.0.0.1]/",
                "http://0.0.0.0:5000/", "http://[fe80::1]/", "http://224.0.0.1/"):
        with pytest.raises(AddressNotAllowed) as refused:
            await egress.check_data(url)
        assert "CORRAL_ALLOWED_HOSTS" in str(refused.value)
    with pytest.raises(Offline):
        await gate(tmp_path, CORRAL_OFFLINE="1").check_data("https://104.16.1.1/blob")


# ---- requests over real sockets ----------------------------------------------------------------

async def test_a_local_data_url_is_refused_before_a_socket_opens(tmp_path: Path,
                                                                 listener: RecordingListener) -> None:
    egress = gate(tmp_path)
    async with egress.session(timeout=TIMEOUT) as http:
        with pytest.raises(AddressNotAllowed, match="a loopback address"):
            await egress.data_request(http, "GET", f"{listener.url}/blob")
        # a name is checked where the connection resolves it: localhost is loopback too
        with pytest.raises(AddressNotAllowed, match="localhost"):
            await egress.data_request(http, "GET", f"http://localhost:{listener.port}/blob")
    assert listener.accepted == 0
    listed = gate(tmp_path, CORRAL_ALLOWED_HOSTS=f"localhost:{listener.port}")
    async with listed.session(timeout=TIMEOUT) as http:
        with pytest.raises(aiohttp.ClientError):  # the listener hangs up: it was reached
            await listed.data_request(http, "GET", f"http://localhost:{listener.port}/blob")
    assert listener.accepted >= 1  # aiohttp retries a GET the server hung up on once


async def test_every_hop_of_a_data_url_is_checked_and_credentials_stay_behind(
    tmp_path: Path, listener: RecordingListener, hops: tuple[TestServer, list[web.Request]]
) -> None:
    server, seen = hops
    egress = gate(tmp_path, CORRAL_ALLOWED_HOSTS=f"127.0.0.1:{server.port}")
    async with egress.session(timeout=TIMEOUT) as http:
        with pytest.raises(AddressNotAllowed):
            await egress.data_request(http, "GET", server.make_url("/to").with_query(url=f"{listener.url}/x"),
                                      headers={"Authorization": "Bearer secret", "Range": "bytes=0-9"})
        assert listener.accepted == 0
        with pytest.raises(RedirectNotAllowed, match=f"more than {MAX_HOPS}"):
            await egress.data_request(http, "GET", server.make_url("/loop"))
        assert len([r for r in seen if r.path == "/loop"]) == MAX_HOPS + 1
        async with await egress.data_request(http, "GET", server.make_url("/to").with_query(url="/ok"),
                                             headers={"Authorization": "Bearer secret"}) as resp:
            assert resp.status == 200 and await resp.text() == "ok"
    assert all("Authorization" not in r.headers for r in seen)
    assert seen[0].headers["Range"] == "bytes=0-9"


async def test_registry_requests_stay_on_the_registry_host(
    tmp_path: Path, listener: RecordingListener, hops: tuple[TestServer, list[web.Request]]
) -> None:
    server, seen = hops
    registry = str(server.make_url(""))
    # the other host is even listed: a registry's redirect still may not lead there (with its token)
    egress = gate(tmp_path, CORRAL_ALLOWED_HOSTS=f"127.0.0.1:{server.port},{listener.host}")
    async with egress.session(timeout=TIMEOUT) as http:
        same = server.make_url("/to").with_query(url="/ok")
        async with await egress.registry_request(http, "GET", same, registry=registry, follow=True,
                                                 headers={"Authorization": "Bearer t"}) as resp:
            assert resp.status == 200 and seen[-1].headers["Authorization"] == "Bearer t"
        async with await egress.registry_request(http, "GET", same, registry=registry) as resp:
            assert resp.status == 302  # not following: the caller sees the redirect
        elsewhere = server.make_url("/to").with_query(url=f"{listener.url}/v2/")
        with pytest.raises(RedirectNotAllowed, match="another host"):
            await egress.registry_request(http, "GET", elsewhere, registry=registry, follow=True)
        with pytest.raises(RedirectNotAllowed, match="another host"):  # e.g. an upload Location elsewhere
            await egress.registry_request(http, "PATCH", f"{listener.url}/v2/upload", registry=registry)
    assert listener.accepted == 0


async def test_token_requests_pass_the_gate_and_follow_no_redirect(
    tmp_path: Path, listener: RecordingListener, hops: tuple[TestServer, list[web.Request]]
) -> None:
    key = Ed25519PrivateKey.generate()
    offline = gate(tmp_path, listener.url, CORRAL_OFFLINE="1")
    realm = Challenge(f"{listener.url}/token", "corral", "repository:library/m:push")
    async with offline.session(timeout=TIMEOUT) as http:
        with pytest.raises(Offline):
            await fetch_token(http, realm, listener.host, key, offline)
    assert listener.accepted == 0
    server, seen = hops
    online = gate(tmp_path, str(server.make_url("")), CORRAL_ALLOWED_HOSTS=listener.host)
    redirected = Challenge(f"{server.make_url('/to').with_query(url=listener.url + '/token')}", "corral", "x")
    async with online.session(timeout=TIMEOUT) as http:
        with pytest.raises(TokenError, match="does not follow"):
            await fetch_token(http, redirected, f"127.0.0.1:{server.port}", key, online)
    assert listener.accepted == 0 and len(seen) == 1


async def test_a_proxy_does_not_bypass_the_gate(tmp_path: Path, listener: RecordingListener,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = await RecordingListener().start()
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        assert environment_proxies() == (proxy.url,)
        egress = gate(tmp_path, "http://registry.example", environment_proxies())
        async with egress.session(timeout=TIMEOUT) as http:
            for url in (f"{listener.url}/blob", f"http://localhost:{listener.port}/blob"):
                with pytest.raises(AddressNotAllowed):  # checked before the proxy is asked
                    await egress.data_request(http, "GET", url)
            with pytest.raises(HostNotAllowed):
                await egress.registry_request(http, "GET", "http://evil.example/v2/", registry="http://evil.example")
            assert proxy.accepted == 0
            with pytest.raises(aiohttp.ClientError):  # an allowed request does go through the proxy
                await egress.registry_request(http, "GET", "http://registry.example/v2/",
                                              registry="http://registry.example")
        assert proxy.accepted >= 1 and listener.accepted == 0
    finally:
        await proxy.close()


def _resolved(*addresses: str) -> list[ResolveResult]:
    return [ResolveResult(hostname="cdn.example", host=a, port=443, family=0, proto=0, flags=0) for a in addresses]


def test_resolved_addresses_are_screened_where_the_connection_is_made(tmp_path: Path) -> None:
    """What a name resolves to at connect time: local answers dropped, none left refused (DNS rebinding)."""
    egress = gate(tmp_path, CORRAL_ALLOWED_HOSTS="cdn.lan:8443", proxies=("http://user:pw@proxy.lan:3128",))
    mixed = _resolved("127.0.0.1", "104.16.1.1", "::ffff:10.0.0.1", "2606:4700::1111")
    assert [r["host"] for r in egress.screen("cdn.example", 443, mixed)] == ["104.16.1.1", "2606:4700::1111"]
    with pytest.raises(AddressNotAllowed, match="a loopback address"):
        egress.screen("rebound.example", 443, _resolved("127.0.0.1"))
    with pytest.raises(AddressNotAllowed, match="a link-local address"):
        egress.screen("metadata.example", 80, _resolved("fe80::1%2", "169.254.169.254"))
    local = _resolved("192.168.1.9")
    assert egress.screen("cdn.lan", 8443, local) == local  # listed: a LAN host is what it is
    assert egress.screen("proxy.lan", 3128, local) == local  # the configured proxy
    with pytest.raises(AddressNotAllowed):
        egress.screen("cdn.lan", 443, local)  # another port of a listed host is not listed
    offline = gate(tmp_path, CORRAL_OFFLINE="1")
    with pytest.raises(Offline):
        offline.screen("cdn.example", 443, _resolved("104.16.1.1"))
