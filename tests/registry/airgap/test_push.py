"""Push into corral: signed token requests, resumable uploads, and a model carried between two
corrals (an "internet side" and an "air-gapped side") with `corral push`.

The air-gapped side is set up as the README's air gap is: not in offline mode, its upstream
unreachable. A push must never depend on the upstream, reachable or not."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yarl import URL

from registry.airgap import push
from registry.auth.keys import sign_challenge, token_request_data
from registry.auth.token_client import Challenge, TokenError, fetch_token, parse_challenge, token_url
from registry.config import Settings
from registry.model.manifest import MANIFEST_V2, MEDIA_MODEL, Layer
from registry.model.names import Digest
from registry.server.app import create_app
from registry.server.services import SERVICES
from registry.storage.uploads import IncompleteChunkError, UploadStore
from tests.registry.conftest import make_settings
from tests.support.airgap import (
    add_model,
    authorize,
    corral,
    egress_to,
    internet_side,
    manifest_for,
    server_key,
    sha,
    stored_blobs,
)
from tests.support.digests import sha256_file
from tests.support.docker_registry import DockerRegistry
from tests.support.fake_ollama_registry import FakeOllamaRegistry
from tests.support.legacy_pull import LegacyPuller
from tests.support.mirror import services_of
from tests.support.models import smollm2_gguf
from tests.support.postgres import both_databases
from tests.support.server import ServerProcess, free_port, start_server

UPLOADS = "/v2/library/tiny/blobs/uploads/"
ClientFactory = Callable[..., Awaitable[TestClient]]


async def challenge_of(client: TestClient) -> Challenge:
    resp = await client.post(UPLOADS)
    assert resp.status == 401
    challenge = parse_challenge(resp.headers["WWW-Authenticate"])
    assert challenge is not None
    return challenge


async def token(client: TestClient, key: Ed25519PrivateKey, tmp_path: Path) -> str:
    challenge = await challenge_of(client)
    async with aiohttp.ClientSession() as http:
        return await fetch_token(http, challenge, f"{client.host}:{client.port}", key, egress_to(tmp_path, client))


async def signed_get(url: str, key: Ed25519PrivateKey) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url, headers={"Authorization": sign_challenge(key, token_request_data(url))})


# ---- protocol, in process ----------------------------------------------------------------------

async def test_writes_are_challenged_on_the_same_host(client: TestClient, tmp_path: Path) -> None:
    challenge = await challenge_of(client)
    assert challenge.realm == f"http://{client.host}:{client.port}/v2/token"
    assert challenge.scope == "repository:library/tiny:push,pull"
    assert (await client.get("/v2/library/tiny/manifests/latest")).status == 404  # pulls stay anonymous
    with pytest.raises(TokenError, match="does not match"):
        async with aiohttp.ClientSession() as http:
            await fetch_token(http, challenge, "elsewhere:1", Ed25519PrivateKey.generate(), egress_to(tmp_path, client))


async def test_token_requests_refused(client: TestClient, settings: Settings) -> None:
    trusted, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    authorize(settings.models, trusted)
    challenge = await challenge_of(client)
    url = token_url(challenge)
    assert (await signed_get(url, stranger)).status_code == 401
    first = await signed_get(url, trusted)
    assert first.status_code == 200 and first.json()["token"]
    replay = await signed_get(url, trusted)
    assert replay.status_code == 401 and "nonce already used" in replay.text
    stale = await signed_get(token_url(challenge, now=time.time() - 3600), trusted)
    assert stale.status_code == 401 and "stale" in stale.text
    forged = sign_challenge(stranger, token_request_data(url)).split(":")[1]
    blob = sign_challenge(trusted, b"").split(":")[0]
    async with httpx.AsyncClient() as http:
        resp = await http.get(token_url(challenge), headers={"Authorization": f"{blob}:{forged}"})
    assert resp.status_code == 401 and "does not verify" in resp.text


@both_databases
async def test_resumable_upload_then_manifest(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    authorize(settings.models, key)
    auth = {"Authorization": f"Bearer {await token(client, key, tmp_path)}"}
    data = bytes(range(256)) * 1000
    start = await client.post(UPLOADS, headers=auth)
    assert start.status == 202
    location = start.headers["Location"]
    assert location.startswith(f"http://{client.host}:{client.port}/v2/library/tiny/blobs/uploads/")

    async def patch(url: str, a: int, b: int) -> aiohttp.ClientResponse:
        return await client.patch(URL(url).path, data=data[a:b], headers={**auth, "Content-Range": f"{a}-{b - 1}"})

    first = await patch(location, 0, 100_000)
    assert first.status == 202 and first.headers["Range"] == "0-99999"
    assert (await patch(first.headers["Location"], 150_000, 200_000)).status == 416  # a gap
    again = await patch(first.headers["Location"], 0, 100_000)  # a retried part is accepted
    assert again.status == 202
    status = await client.get(URL(location).path, headers=auth)
    assert status.status == 204 and status.headers["Range"] == "0-99999"
    assert (await patch(location, 100_000, len(data))).status == 202
    wrong = await client.put(URL(location).path, params={"digest": sha(b"other")}, headers=auth)
    assert wrong.status == 400 and (await wrong.json())["errors"][0]["code"] == "DIGEST_INVALID"

    start = await client.post(UPLOADS, headers=auth)
    path = URL(start.headers["Location"]).path
    await client.patch(path, data=data, headers={**auth, "Content-Range": f"0-{len(data) - 1}"})
    done = await client.put(path, params={"digest": sha(data)}, headers=auth)
    assert done.status == 201 and done.headers["Docker-Content-Digest"] == sha(data)
    assert (await client.head(f"/v2/library/tiny/blobs/{sha(data)}")).status == 200
    mounted = await client.post(UPLOADS, params={"mount": sha(data), "from": "library/other"}, headers=auth)
    assert mounted.status == 201

    config = b'{"model_format":"gguf"}'
    raw = manifest_for({"application/vnd.ollama.image.model": data}, config)
    put = await client.put("/v2/library/tiny/manifests/1b", data=raw,
                           headers={**auth, "Content-Type": MANIFEST_V2})
    assert put.status == 400 and (await put.json())["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    blob = await client.post(UPLOADS, params={"digest": sha(config)}, headers=auth)
    path = URL(blob.headers["Location"]).path
    assert (await client.put(path, params={"digest": sha(config)}, data=config, headers=auth)).status == 201
    put = await client.put("/v2/library/tiny/manifests/1b", data=raw, headers={**auth, "Content-Type": MANIFEST_V2})
    assert put.status == 201
    assert await (await client.get("/v2/library/tiny/manifests/1b")).read() == raw
    deleted = await client.delete("/v2/library/tiny/manifests/1b", headers=auth)
    assert deleted.status == 202
    assert (await client.get("/v2/library/tiny/manifests/1b")).status == 404


UNSTORABLE = {
    "a long mediaType": {"mediaType": "application/" + "x" * 250, "size": 3},
    "a NUL in the mediaType": {"mediaType": "application/vnd.ollama.image.model\u0000", "size": 3},
    "a size past 64 bits": {"mediaType": MEDIA_MODEL, "size": 2**63},
}


@both_databases
@pytest.mark.parametrize("layer", list(UNSTORABLE))
async def test_a_manifest_no_catalogue_could_store_is_refused_alike_on_both(
        client: TestClient, settings: Settings, tmp_path: Path, layer: str) -> None:
    """PostgreSQL enforces column lengths and refuses NUL in text, where SQLite stores anything:
    values past what the catalogue holds are the client's mistake (400) on both, never a 500."""
    key = Ed25519PrivateKey.generate()
    authorize(settings.models, key)
    auth = {"Authorization": f"Bearer {await token(client, key, tmp_path)}", "Content-Type": MANIFEST_V2}
    raw = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_V2,
                      "layers": [{"digest": sha(b"abc"), **UNSTORABLE[layer]}]}).encode()
    put = await client.put("/v2/library/tiny/manifests/odd", data=raw, headers=auth)
    assert put.status == 400 and (await put.json())["errors"][0]["code"] == "MANIFEST_INVALID"


async def test_a_manifest_is_stored_only_with_all_its_blobs_here(mirror: TestClient, fake_registry: FakeOllamaRegistry,
                                                               tmp_path: Path) -> None:
    weights, config = os.urandom(100_000), b'{"model_format":"gguf"}'
    fake_registry.add_model("library/m", "latest", [(MEDIA_MODEL, weights)], config)
    ua = {"User-Agent": "ollama/0.33.0"}
    assert (await mirror.get("/v2/library/m/manifests/latest", headers=ua)).status == 200  # a pull names it
    key = Ed25519PrivateKey.generate()
    authorize(services_of(mirror).settings.models, key)
    auth = {"Authorization": f"Bearer {await token(mirror, key, tmp_path)}"}
    assert (await mirror.head(f"/v2/library/mine/blobs/{sha(weights)}")).status == 404  # what a push sees

    async def upload(data: bytes) -> None:
        start = await mirror.post("/v2/library/mine/blobs/uploads/", headers=auth)
        path = URL(start.headers["Location"]).path
        assert (await mirror.put(path, params={"digest": sha(data)}, data=data, headers=auth)).status == 201

    raw = manifest_for({MEDIA_MODEL: weights}, config)
    put_headers = {**auth, "Content-Type": MANIFEST_V2}
    await upload(config)  # the weights are upstream and named by a pulled manifest, not stored here
    refused = await mirror.put("/v2/library/mine/manifests/1", data=raw, headers=put_headers)
    assert refused.status == 400
    assert (await refused.json())["errors"][0] == {
        "code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": {"digest": sha(weights)}}
    catalog = services_of(mirror).catalog
    assert await catalog.get_manifest(Digest.parse(sha(raw))) is None
    await upload(weights)
    wrong = await mirror.put(f"/v2/library/mine/manifests/{sha(b'other')}", data=raw, headers=put_headers)
    assert wrong.status == 400 and (await wrong.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert await catalog.get_manifest(Digest.parse(sha(raw))) is None
    assert (await mirror.put("/v2/library/mine/manifests/1", data=raw, headers=put_headers)).status == 201
    assert await (await mirror.get("/v2/library/mine/manifests/1")).read() == raw


async def test_upload_limit_and_abandoned_uploads(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CORRAL_MAX_UPLOAD="1000", CORRAL_UPLOAD_TIMEOUT="1s")
    client = await aiohttp_client(await create_app(settings))
    key = Ed25519PrivateKey.generate()
    authorize(settings.models, key)
    auth = {"Authorization": f"Bearer {await token(client, key, tmp_path)}"}
    start = await client.post(UPLOADS, headers=auth)
    path = URL(start.headers["Location"]).path
    big = await client.patch(path, data=b"x" * 2000, headers={**auth, "Content-Range": "0-1999"})
    assert big.status == 413
    streamed = await client.patch(path, data=_chunks(b"x" * 600, 2), headers=auth)  # no length: counted
    assert streamed.status == 413
    assert (await client.get(path, headers=auth)).headers["Range"] == "0-0"
    for _ in range(50):
        await asyncio.sleep(0.1)
        if (await client.get(path, headers=auth)).status == 404:
            break
    assert (await client.get(path, headers=auth)).status == 404
    assert not any((settings.scratch_dir / "uploads").iterdir())


async def test_upload_sessions_roll_back_and_survive_a_restart(tmp_path: Path) -> None:
    uploads = UploadStore(tmp_path / "uploads", max_size=10_000, timeout=60)
    upload = await uploads.create("library/tiny")
    await uploads.append(upload, 0, _chunks(b"a" * 100, 3), 300)

    async def broken() -> AsyncIterator[bytes]:
        yield b"b" * 100
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await uploads.append(upload, 300, broken(), 200)
    with pytest.raises(IncompleteChunkError):
        await uploads.append(upload, 300, _chunks(b"b" * 100, 1), 200)
    assert upload.size == 300 and upload.data_path.stat().st_size == 300

    restarted = UploadStore(tmp_path / "uploads", max_size=10_000, timeout=60)
    assert await restarted.get(upload.id, "library/other") is None
    again = await restarted.get(upload.id, "library/tiny")
    assert again is not None and again.size == 300 and again.hasher is None
    await restarted.append(again, None, _chunks(b"c" * 50, 1), None)
    assert str(await restarted.digest(again)) == sha(b"a" * 300 + b"c" * 50)


async def _chunks(data: bytes, n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield data


async def test_push_client_resumes_after_a_failed_part(aiohttp_client: ClientFactory, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "MIN_PART", 64_000)
    monkeypatch.setattr(push, "RETRY_DELAY", 0.01)
    settings = make_settings(tmp_path / "target")
    app = await create_app(settings)
    patches: list[int] = []

    @web.middleware
    async def flaky(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "PATCH":
            patches.append(len(patches))
            if len(patches) == 2:
                return web.Response(status=503, text="try again")
        return await handler(request)

    app.middlewares.append(flaky)
    target = await aiohttp_client(app)
    key = Ed25519PrivateKey.generate()
    authorize(settings.models, key)
    data = os.urandom(300_000)
    (tmp_path / "blob").write_bytes(data)
    layer = Layer(MEDIA_MODEL, Digest.parse(sha(data)), len(data))
    progress = push.Progress(layer)
    base = f"http://{target.host}:{target.port}"
    egress = egress_to(tmp_path, target)
    async with egress.session(timeout=aiohttp.ClientTimeout(total=60)) as http:
        pusher = push.Pusher(push.RegistrySession(http, key, egress, base), base, "library/tiny")
        await pusher.blob(layer, tmp_path / "blob", progress)
    assert progress.completed == len(data) and len(patches) == 6  # 5 parts, the second one twice
    assert target.server.app[SERVICES].store.path(layer.digest).read_bytes() == data


async def test_pull_auth_and_admin_token(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CORRAL_PULL_AUTH="1", OLLAMA_HOST="0.0.0.0:11434",
                             CORRAL_ADMIN_TOKEN="s3cret")
    client = await aiohttp_client(await create_app(settings))
    assert (await client.get("/v2/library/tiny/manifests/latest")).status == 401
    key = Ed25519PrivateKey.generate()
    authorize(settings.models, key)
    auth = {"Authorization": f"Bearer {await token(client, key, tmp_path)}"}
    assert (await client.get("/v2/library/tiny/manifests/latest", headers=auth)).status == 404
    assert (await client.get("/api/tags")).status == 200
    assert (await client.delete("/api/delete", json={"model": "x"})).status == 401
    assert (await client.delete("/api/delete", json={"model": "x"}, headers=auth)).status == 401
    admin = {"Authorization": "Bearer s3cret"}
    assert (await client.delete("/api/delete", json={"model": "x"}, headers=admin)).status == 404
    assert (await client.post("/api/corral/import", data=b"", headers=auth)).status == 401


async def test_admin_routes_closed_without_a_token(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, OLLAMA_HOST="0.0.0.0:11434")
    client = await aiohttp_client(await create_app(settings))
    resp = await client.post("/api/copy", json={"source": "a", "destination": "b"})
    assert resp.status == 403 and "CORRAL_ADMIN_TOKEN" in (await resp.json())["error"]


# ---- two corral processes: the internet side pushes to the air-gapped side -----------------------

@pytest.fixture(scope="module")
def registry_port() -> int:
    """Where the push tests run their docker-registry, known before the internet side starts."""
    return free_port()


@pytest.fixture(scope="module")
def target_port() -> int:
    """Where test_a_push_uploads_what_the_upstream_also_holds runs its target corral."""
    return free_port()


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory, registry_port: int,
          target_port: int) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """The air-gapped side runs as the README says: not offline, its default upstream
    (registry.ollama.ai, so /v2 paths name models as the README says) reached only through a proxy
    port nothing listens on: unreachable, as inside an air gap, and no DNS needed. The internet side
    runs offline (the test servers' default): a push goes out only to the hosts it lists."""
    closed = f"http://127.0.0.1:{free_port()}"
    airgap = start_server(tmp_path_factory.mktemp("airgap"), {
        "CORRAL_OFFLINE": "0", "https_proxy": closed, "HTTPS_PROXY": closed, "no_proxy": "", "NO_PROXY": ""})
    listed = ",".join(f"127.0.0.1:{port}" for port in (airgap.port, registry_port, target_port))
    internet = internet_side(tmp_path_factory.mktemp("internet"), {"CORRAL_ALLOWED_HOSTS": listed})
    yield internet, airgap
    internet.stop()
    airgap.stop()


def test_push_between_corrals(sides: tuple[ServerProcess, ServerProcess], tmp_path: Path) -> None:
    internet, airgap = sides
    destination = f"127.0.0.1:{airgap.port}/library/smollm2"
    assert corral(internet, "cp", "smollm2", destination).returncode == 0

    refused = corral(internet, "push", destination, "--insecure")
    assert refused.returncode == 1 and "key is not in authorized_keys" in refused.stderr

    key_line = corral(internet, "key").stdout.strip()
    assert key_line.startswith("ssh-ed25519 ")
    authorized = corral(airgap, "authorize", key_line)
    assert authorized.returncode == 0, authorized.stderr
    pushed = corral(internet, "push", destination, "--insecure")
    assert pushed.returncode == 0, pushed.stderr
    assert "pushing manifest" in pushed.stderr and "success" in pushed.stderr

    there = {m["name"]: m["digest"] for m in httpx.get(airgap.url + "/api/tags").json()["models"]}
    here = {m["name"]: m["digest"] for m in httpx.get(internet.url + "/api/tags").json()["models"]}
    assert there == {"smollm2:latest": here["smollm2:latest"]}  # same manifest bytes, same model ID
    received = stored_blobs(airgap)
    gguf = sha256_file(smollm2_gguf())
    assert gguf in received and sha256_file(received[gguf]) == gguf
    for digest, path in stored_blobs(internet).items():
        assert received[digest].read_bytes() == path.read_bytes()
    assert not any((airgap.root / "models" / "tmp" / "uploads").iterdir())  # sessions cleaned up

    again = corral(internet, "push", destination, "--insecure")  # everything present: only HEADs
    assert again.returncode == 0, again.stderr
    pulled = asyncio.run(LegacyPuller(airgap.url, tmp_path, min_part=16_000_000).pull("library/smollm2", "latest"))
    assert {d: p.read_bytes() for d, p in pulled.blobs.items()} == {d: p.read_bytes() for d, p in received.items()}
    show = httpx.post(airgap.url + "/api/show", json={"model": "smollm2"}).json()
    assert show["details"]["family"] == "llama"

    resp = httpx.post(airgap.url + "/api/generate", timeout=120, json={
        "model": "smollm2", "prompt": "Say hello.", "stream": False, "options": {"num_predict": 8}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["done"] is True and resp.json()["eval_count"] >= 1


async def test_signatures_checked_by_the_receiving_process(sides: tuple[ServerProcess, ServerProcess]) -> None:
    internet, airgap = sides
    authorized = corral(airgap, "authorize", corral(internet, "key").stdout.strip())
    assert authorized.returncode == 0, authorized.stderr
    async with httpx.AsyncClient() as http:
        challenge = parse_challenge((await http.post(airgap.url + UPLOADS)).headers["WWW-Authenticate"])
    assert challenge is not None and challenge.realm == f"{airgap.url}/v2/token"
    key = server_key(internet)
    url = token_url(challenge)
    assert (await signed_get(url, key)).status_code == 200
    assert "nonce already used" in (await signed_get(url, key)).text
    assert "stale" in (await signed_get(token_url(challenge, now=time.time() - 600), key)).text
    stranger = await signed_get(token_url(challenge), Ed25519PrivateKey.generate())
    assert stranger.status_code == 401 and "not in authorized_keys" in stranger.text


def test_a_push_uploads_what_the_upstream_also_holds(sides: tuple[ServerProcess, ServerProcess], registry_port: int,
                                                     target_port: int, tmp_path: Path) -> None:
    internet, _ = sides
    registry = DockerRegistry(tmp_path / "docker-registry", registry_port).start()
    target = start_server(tmp_path / "target", {"CORRAL_OFFLINE": "0", "CORRAL_UPSTREAM": registry.url},
                          port=target_port)
    try:
        upstream_copy = f"{registry.host}/library/smollm2"
        assert corral(internet, "cp", "smollm2", upstream_copy).returncode == 0
        assert corral(internet, "push", upstream_copy, "--insecure").returncode == 0  # upstream has every blob
        gguf = sha256_file(smollm2_gguf())
        assert httpx.head(f"{target.url}/v2/library/smollm2/blobs/{gguf}").status_code == 404
        asked_upstream = len(registry.accesses())

        assert corral(target, "authorize", corral(internet, "key").stdout.strip()).returncode == 0
        destination = f"127.0.0.1:{target.port}/library/smollm2"
        assert corral(internet, "cp", "smollm2", destination).returncode == 0
        pushed = corral(internet, "push", destination, "--insecure")
        assert pushed.returncode == 0, pushed.stderr
        received = stored_blobs(target)
        for digest, path in stored_blobs(internet).items():
            assert received[digest].read_bytes() == path.read_bytes()  # uploaded, none skipped
        assert len(registry.accesses()) == asked_upstream
        there = {m["name"]: m["digest"] for m in httpx.get(target.url + "/api/tags").json()["models"]}
        here = {m["name"]: m["digest"] for m in httpx.get(internet.url + "/api/tags").json()["models"]}
        assert there == {"smollm2:latest": here["smollm2:latest"]}  # /v2 paths name registry.ollama.ai's models
    finally:
        target.stop()
        registry.stop()


def test_push_to_docker_registry(sides: tuple[ServerProcess, ServerProcess], registry_port: int,
                                 tmp_path: Path) -> None:
    internet, _ = sides
    registry = DockerRegistry(tmp_path / "docker-registry", registry_port).start()
    try:
        destination = f"{registry.host}/team/smollm2:v1"
        assert corral(internet, "cp", "smollm2", destination).returncode == 0
        pushed = corral(internet, "push", destination, "--insecure")
        assert pushed.returncode == 0, pushed.stderr
        manifest = httpx.get(f"{registry.url}/v2/team/smollm2/manifests/v1",
                             headers={"Accept": MANIFEST_V2}).content
        local = httpx.get(f"{internet.url}/v2/library/smollm2/manifests/latest").content
        assert manifest == local
        for layer in [*json.loads(manifest)["layers"], json.loads(manifest)["config"]]:
            head = httpx.head(f"{registry.url}/v2/team/smollm2/blobs/{layer['digest']}")
            assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer["size"]
    finally:
        registry.stop()


# ---- a destination that fails ------------------------------------------------------------------

async def test_push_to_an_unreachable_destination_is_a_bad_gateway(aiohttp_client: ClientFactory,
                                                                   tmp_path: Path) -> None:
    """Nothing listens at the destination: the failure is upstream's (502), not corral's (500)."""
    port = free_port()
    settings = make_settings(tmp_path, CORRAL_ALLOWED_HOSTS=f"127.0.0.1:{port}")
    client = await aiohttp_client(await create_app(settings))
    name = f"127.0.0.1:{port}/library/tiny:latest"
    await add_model(client, name, b"GGUF weights")
    resp = await client.post("/api/push", json={"model": name, "insecure": True, "stream": False})
    assert resp.status == 502, await resp.text()
    assert f"push {name}" in (await resp.json())["error"]
    streamed = await client.post("/api/push", json={"model": name, "insecure": True})
    assert streamed.status == 200  # the status line went out with the first progress line
    assert "error" in json.loads((await streamed.text()).splitlines()[-1])
