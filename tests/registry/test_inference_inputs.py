"""Inference inputs that used to reach llama.cpp or the template engine unchecked, sent to a real
`corral serve`: each ends in an error answer, and the same server goes on serving.

A server process, not an in-process app: before these checks an out-of-vocabulary token id
made llama.cpp abort the whole process, which would have taken the test runner with it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import ServerProcess, serving_scripted_models

BOMB = "{{ range $i := 1000000000 }}x{{ end }}"


@pytest.fixture(scope="module")
def corral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving_scripted_models(tmp_path_factory.mktemp("inputs")) as server:
        yield server


def generate(server: ServerProcess, **body: object) -> httpx.Response:
    return httpx.post(server.url + "/api/generate", json={"model": "bigram", "stream": False, **body}, timeout=120)


def still_serving(server: ServerProcess) -> None:
    assert generate(server, prompt="hi", options={"num_predict": 2}).json()["done"] is True
    assert httpx.get(server.url + "/api/tags", timeout=10).status_code == 200
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("token", [999_999_999, -1, 275])  # the bigram vocabulary has 275 tokens
def test_context_ids_outside_the_vocabulary_are_400(corral: ServerProcess, token: int) -> None:
    resp = generate(corral, prompt="hi", context=[1, token])
    assert resp.status_code == 400
    assert resp.json()["error"] == f"context contains token {token}, outside the model's vocabulary of 275"
    still_serving(corral)


def test_context_ids_inside_the_vocabulary_are_used(corral: ServerProcess) -> None:
    first = generate(corral, prompt="hi", options={"num_predict": 2}).json()
    again = generate(corral, prompt="hi", context=first["context"], options={"num_predict": 2})
    assert again.status_code == 200 and again.json()["done"] is True


def test_a_request_template_that_never_ends_is_400(corral: ServerProcess) -> None:
    resp = generate(corral, prompt="hi", template=BOMB)
    assert resp.status_code == 400
    assert "range exceeded 1000000 iterations" in resp.json()["error"]
    still_serving(corral)


def test_a_stored_template_that_never_ends_is_an_error_answer(corral: ServerProcess) -> None:
    created = httpx.post(corral.url + "/api/create", timeout=60,
                         json={"model": "bomb", "from": "bigram", "template": BOMB, "stream": False})
    assert created.status_code == 200, created.text
    for path, body in (("/api/generate", {"prompt": "hi"}),
                       ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]})):
        resp = httpx.post(corral.url + path, json={"model": "bomb", "stream": False, **body}, timeout=120)
        assert resp.status_code == 500
        assert "range exceeded 1000000 iterations" in resp.json()["error"]
    still_serving(corral)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"repeat_last_n": 10**12}, 'option "repeat_last_n" must be between -1 and 1048576'),
        ({"repeat_last_n": -5}, 'option "repeat_last_n" must be between -1 and 1048576'),
        ({"num_thread": 1_000_000}, 'option "num_thread" must be between -2147483648 and 1024'),
        ({"num_batch": 2**40}, 'option "num_batch" must be between -2147483648 and 2147483647'),
        ({"top_k": -(2**40)}, 'option "top_k" must be between -2147483648 and 2147483647'),
    ],
)
def test_options_llama_cpp_cannot_take_are_400(corral: ServerProcess, options: dict, error: str) -> None:
    resp = generate(corral, prompt="hi", options=options)
    assert resp.status_code == 400
    assert resp.json() == {"error": error}
    still_serving(corral)


def test_non_finite_numbers_are_refused_as_go_refuses_them(corral: ServerProcess) -> None:
    resp = httpx.post(corral.url + "/api/generate", timeout=30,
                      content=b'{"model": "bigram", "prompt": "hi", "options": {"temperature": NaN}}')
    assert resp.status_code == 400
    resp = httpx.post(corral.url + "/api/generate", timeout=30,
                      content=b'{"model": "bigram", "prompt": "hi", "options": {"top_p": 1e999}}')
    assert resp.status_code == 400
    still_serving(corral)


@pytest.mark.parametrize("num_predict", [-1, 10**15])
def test_generation_is_bounded_to_ten_contexts_as_ollama_bounds_it(corral: ServerProcess, num_predict: int) -> None:
    """The endless model never stops by itself: only the bound ends its answer."""
    resp = httpx.post(corral.url + "/api/generate", timeout=300, json={
        "model": "endless", "prompt": "hi", "stream": False, "options": {"num_predict": num_predict}})
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["done_reason"] == "length"
    loaded = httpx.get(corral.url + "/api/ps", timeout=10).json()["models"]
    (num_ctx,) = [m["context_length"] for m in loaded if m["name"].startswith("endless")]
    assert body["eval_count"] == 10 * num_ctx
