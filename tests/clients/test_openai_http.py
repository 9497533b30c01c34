"""/v1 on the wire: SSE framing byte for byte, and OpenAI error objects for every bad request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.clients.conftest import MODEL
from tests.support.server import ServerProcess

pytestmark = pytest.mark.model

CHUNK_KEYS = ["id", "object", "created", "model", "system_fingerprint", "choices"]


def _compact(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def test_chat_sse_framing_byte_for_byte(corral: ServerProcess) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 5,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", corral.url + "/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        raw = response.read()
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    events = []
    for frame in frames[:-2]:
        assert frame.startswith(b"data: ") and b"\n" not in frame
        events.append(json.loads(frame[len(b"data: "):]))
    # Re-encoding every event reproduces the body exactly: compact JSON, one `data:` line each.
    assert b"".join(b"data: " + _compact(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n" == raw

    first, *middle, finish, usage = events
    assert all(list(e) == CHUNK_KEYS for e in [first, *middle, finish])
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": first["choices"][0]["delta"]["content"]},
         "finish_reason": None}
    ]
    for event in middle:
        assert list(event["choices"][0]) == ["index", "delta", "finish_reason"]
        assert list(event["choices"][0]["delta"]) == ["content"]
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]
    assert list(usage) == [*CHUNK_KEYS, "usage"] and usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 5
    assert len({e["id"] for e in events}) == 1 and first["id"].startswith("chatcmpl-")


BAD_REQUESTS: list[tuple[str, str, Any, int]] = [
    # (method, path, JSON body or raw bytes, expected status)
    ("POST", "/v1/chat/completions", b"", 400),
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("POST", "/v1/chat/completions", [1, 2], 400),
    ("POST", "/v1/chat/completions", {"model": MODEL}, 400),
    ("POST", "/v1/chat/completions", {"model": 3, "messages": [{"role": "user", "content": "x"}]}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": "hello"}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user"}]}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                      "temperature": "hot"}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 2}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                      "tool_choice": "required"}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
     400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,@@@"}]}]}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [
        {"role": "user", "content": [{"type": "video", "video": "x"}]}]}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                      "response_format": {"type": "json_schema",
                                                          "json_schema": {"schema": {"type": "nonsense"}}}}, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                      "reasoning_effort": "extreme"}, 400),
    ("POST", "/v1/chat/completions", {"model": "missing", "messages": [{"role": "user", "content": "x"}]}, 404),
    ("POST", "/v1/chat/completions", {"model": "Not A Valid Name!", "messages": [{"role": "user", "content": "x"}]},
     404),
    ("POST", "/v1/completions", b"", 400),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}, 400),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "stop": [1]}, 400),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "many"}, 400),
    ("POST", "/v1/completions", {"prompt": "x"}, 400),
    ("POST", "/v1/completions", {"model": "missing", "prompt": "x"}, 404),
    ("POST", "/v1/embeddings", b"[]", 400),
    ("POST", "/v1/embeddings", {"model": MODEL}, 400),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": []}, 400),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": [[1, 2, 3]]}, 400),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": ""}, 400),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": "x", "encoding_format": "int8"}, 400),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": "x", "dimensions": "ten"}, 400),
    ("POST", "/v1/embeddings", {"model": "missing", "input": "x"}, 404),
    ("GET", "/v1/models/missing", None, 404),
    ("GET", "/v1/models/Not A Valid Name!", None, 404),
    ("GET", "/v1/chat/completions", None, 405),
    ("DELETE", "/v1/models", None, 405),
    ("POST", "/v1/no-such-endpoint", {}, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_REQUESTS,
                         ids=[f"{m} {p} #{i}" for i, (m, p, _, _) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_openai_error_objects(
    corral: ServerProcess, method: str, path: str, body: Any, status: int
) -> None:
    content = body if isinstance(body, bytes) else None if body is None else _compact(body)
    response = httpx.request(method, corral.url + path, content=content, timeout=60)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert list(error) == ["message", "type", "param", "code"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    assert error["code"] is None
