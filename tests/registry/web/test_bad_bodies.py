"""Every client mistake in a request body is a 4xx in its route's dialect, never a 500 or a traceback.

The routes come from the application's own route table, so a route added later is covered
without touching this file; a route whose body is not JSON (blob uploads) is listed here by name.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import AbstractRoute
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.config import Settings
from tests.registry.airgap.test_push import token
from tests.support.airgap import add_model, authorize
from tests.support.bigram import write_scripted_gguf
from tests.support.models import CHATML_TEMPLATE

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
#: Routes whose body is not JSON: blob bytes, upload chunks, or no body at all.
NOT_JSON = {
    ("POST", "/api/blobs/{digest}"),
    ("POST", "/v2/{ns}/{model}/blobs/uploads/"),
    ("POST", "/v2/{ns}/{model}/blobs/uploads"),
    ("PATCH", "/v2/{ns}/{model}/blobs/uploads/{upload_id}"),
    ("PUT", "/v2/{ns}/{model}/blobs/uploads/{upload_id}"),
    ("DELETE", "/v2/{ns}/{model}/blobs/uploads/{upload_id}"),
    ("DELETE", "/v2/{ns}/{model}/manifests/{reference}"),
}
PATH_VALUES = {"ns": "library", "model": "tiny", "reference": "latest", "digest": "sha256:" + "0" * 64}

#: Bodies no route can accept.
MALFORMED = {
    "deep array": b"[" * 100_000 + b"]" * 100_000,
    "deep object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "array": b'[{"model": "bigram"}]',
    "string": b'"bigram"',
    "number": b"5",
    "not utf-8": b'{"model": "\xff\xfe"}',
    "cut short": b'{"model": "bigram"',
    "NaN": b'{"model": "bigram", "options": {"temperature": NaN}}',
}
#: A lone surrogate in every name a route reads: Go makes it U+FFFD, a name no model has.
SURROGATE_NAMES = (
    b'{"model": "\\ud800", "name": "\\ud800", "source": "\\ud800", "destination": "\\ud800",'
    b' "path": "\\ud800", "prompt": "\\ud800", "input": "\\ud800",'
    b' "messages": [{"role": "user", "content": "\\ud800"}]}'
)


def _json_routes(client: TestClient) -> list[tuple[str, str, str]]:
    """(method, canonical pattern, a concrete path) of every route that reads a JSON body."""
    found = []
    for route in client.app.router.routes():
        assert isinstance(route, AbstractRoute)
        pattern = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical if route.resource else "")
        if route.method not in BODY_METHODS or (route.method, pattern) in NOT_JSON:
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], pattern)
        found.append((route.method, pattern, path))
    return found


def _check_dialect(path: str, payload: dict) -> None:
    if path.startswith("/v2/"):
        assert isinstance(payload["errors"][0]["message"], str)
    elif path.startswith("/v1/"):
        assert isinstance(payload["error"]["message"], str)
    else:
        assert isinstance(payload["error"], str)


@pytest.fixture
async def stocked(client: TestClient, settings: Settings, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    """The in-process corral with the bigram model, and a push token for library/tiny."""
    await add_model(client, "bigram", write_scripted_gguf(tmp_path).read_bytes(), CHATML_TEMPLATE.encode())
    key = Ed25519PrivateKey.generate()
    authorize(settings.models, key)
    return client, {"Authorization": f"Bearer {await token(client, key, tmp_path)}"}


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    failures = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not failures, [r.getMessage() for r in failures]


@pytest.mark.parametrize("kind", list(MALFORMED))
async def test_malformed_bodies_are_4xx_on_every_json_route(
    stocked: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    client, auth = stocked
    routes = _json_routes(client)
    assert ("POST", "/api/generate", "/api/generate") in routes and len(routes) > 20
    answers = {}
    for method, _pattern, path in routes:
        resp = await client.request(method, path, data=MALFORMED[kind], headers=auth)
        answers[f"{method} {path}"] = resp.status
        if 400 <= resp.status < 500:
            _check_dialect(path, await resp.json())
    assert all(400 <= status < 500 for status in answers.values()), answers
    _no_tracebacks(caplog)


async def test_lone_surrogates_in_names_are_never_a_server_error(
    stocked: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, auth = stocked
    answers = {}
    for method, _pattern, path in _json_routes(client):
        resp = await client.request(method, path, data=SURROGATE_NAMES, headers=auth)
        answers[f"{method} {path}"] = resp.status
        if resp.status >= 400:
            _check_dialect(path, await resp.json())
    assert all(status < 500 for status in answers.values()), answers
    model_routes = [k for k in answers if re.search(r"/api/(generate|chat|embed|embeddings|show|pull|push)$|/v1/", k)]
    assert all(400 <= answers[k] < 500 for k in model_routes), answers
    _no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"prompt": "hi", "stream": "yes"}),
        ("/api/generate", {"prompt": "hi", "context": [1.5]}),
        ("/api/generate", {"prompt": "hi", "context": [True]}),
        ("/api/generate", {"prompt": "hi", "options": [1]}),
        ("/api/generate", {"prompt": "hi", "options": {"num_ctx": "big"}}),
        ("/api/generate", {"prompt": "hi", "format": 5}),
        ("/api/generate", {"prompt": "hi", "keep_alive": []}),
        ("/api/generate", {"prompt": "hi", "images": "x"}),
        ("/api/generate", {"prompt": "hi", "template": 5}),
        ("/api/chat", {"messages": "hi"}),
        ("/api/chat", {"messages": [{"role": "user", "content": [1]}]}),
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": "no"}),
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "tools": [{"function": 5}]}),
        ("/api/embed", {"input": [5]}),
        ("/api/embed", {"input": "x", "dimensions": "3"}),
        ("/api/embeddings", {"prompt": 5}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        ("/v1/completions", {"prompt": "hi", "seed": 1.5}),
        ("/v1/embeddings", {"input": [[1.5]]}),
    ],
)
async def test_fields_of_the_wrong_type_are_400(
    stocked: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture, path: str, body: dict
) -> None:
    client, _auth = stocked
    resp = await client.post(path, json={"model": "bigram", **body})
    assert resp.status == 400, await resp.text()
    _check_dialect(path, await resp.json())
    _no_tracebacks(caplog)
