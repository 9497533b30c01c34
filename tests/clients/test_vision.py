"""A vision model made through `/api/create` (SmolLM2's GGUF plus the test projector of
tests/support/projector.py) and seen through every client: ollama's `images`, OpenAI's image_url
parts, the Responses API's input_image, Anthropic's image blocks. The projector's weights are
random, so each test checks that the image reached the model (its 4 tokens counted, the first
token's log-probability moved), never what the model says about it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.clients.conftest import MODEL
from tests.support.images import RED, encoded_image
from tests.support.models import smollm2_gguf
from tests.support.projector import IMAGE_TOKENS, SMOLLM2_EMBEDDING, write_llava_projector
from tests.support.server import ServerProcess

pytestmark = pytest.mark.model

VISION_MODEL = "smollm2-vision"
QUESTION = "What is this?"
GREEDY = {"temperature": 0, "seed": 7, "num_predict": 1}
PNG = encoded_image(RED)
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def client(corral: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ollama.Client]:
    """The ollama client, once the vision model exists; it is unloaded after the module, so the
    modules after this one find the loaded models they expect."""
    client = ollama.Client(host=corral.url)
    projector = write_llava_projector(Path(tmp_path_factory.mktemp("vision")) / "mmproj.gguf", SMOLLM2_EMBEDDING)
    files = {"model.gguf": client.create_blob(smollm2_gguf()), "mmproj.gguf": client.create_blob(projector)}
    assert client.create(model=VISION_MODEL, files=files).status == "success"
    yield client
    client.generate(model=VISION_MODEL, keep_alive=0)


def test_show_reports_vision(client: ollama.Client) -> None:
    assert "vision" in client.show(VISION_MODEL).capabilities


def test_chat_with_an_image(client: ollama.Client) -> None:
    plain = client.chat(model=VISION_MODEL, messages=[{"role": "user", "content": QUESTION}], options=GREEDY,
                        logprobs=True)
    seen = client.chat(model=VISION_MODEL, messages=[{"role": "user", "content": QUESTION, "images": [PNG]}],
                       options=GREEDY, logprobs=True)
    assert seen.prompt_eval_count == plain.prompt_eval_count + IMAGE_TOKENS
    assert seen.logprobs[0].logprob != pytest.approx(plain.logprobs[0].logprob, abs=1e-4)


def test_generate_with_an_image(client: ollama.Client) -> None:
    plain = client.generate(model=VISION_MODEL, prompt=QUESTION, options=GREEDY, logprobs=True)
    seen = client.generate(model=VISION_MODEL, prompt=QUESTION, images=[PNG], options=GREEDY, logprobs=True)
    assert seen.prompt_eval_count == plain.prompt_eval_count + IMAGE_TOKENS
    assert seen.logprobs[0].logprob != pytest.approx(plain.logprobs[0].logprob, abs=1e-4)


def _text_and(part: dict | None) -> list[dict]:
    return [{"type": "text", "text": QUESTION}, *([part] if part else [])]


def test_openai_image_url_part(corral: ServerProcess, client: ollama.Client) -> None:
    sdk = openai.OpenAI(base_url=corral.url + "/v1", api_key="corral", max_retries=0)

    def ask(part: dict | None) -> openai.types.chat.ChatCompletion:
        return sdk.chat.completions.create(model=VISION_MODEL, messages=[{"role": "user", "content": _text_and(part)}],
                                           max_tokens=1, temperature=0, seed=7, logprobs=True)

    plain, seen = ask(None), ask({"type": "image_url", "image_url": {"url": DATA_URL}})
    # each part is its own message, joined by the template layer: the image's tokens plus a separator
    assert IMAGE_TOKENS <= seen.usage.prompt_tokens - plain.usage.prompt_tokens <= IMAGE_TOKENS + 2
    first = seen.choices[0].logprobs.content[0].logprob
    assert first != pytest.approx(plain.choices[0].logprobs.content[0].logprob, abs=1e-4)


def test_responses_input_image(corral: ServerProcess, client: ollama.Client) -> None:
    sdk = openai.OpenAI(base_url=corral.url + "/v1", api_key="corral", max_retries=0)

    def ask(part: dict | None) -> int:
        content = [{"type": "input_text", "text": QUESTION}, *([part] if part else [])]
        response = sdk.responses.create(model=VISION_MODEL, input=[{"role": "user", "content": content}],
                                        max_output_tokens=1, temperature=0)
        return response.usage.input_tokens

    seen = ask({"type": "input_image", "image_url": DATA_URL, "detail": "auto"})
    assert seen == ask(None) + IMAGE_TOKENS


def test_anthropic_image_block(corral: ServerProcess, client: ollama.Client) -> None:
    sdk = anthropic.Anthropic(base_url=corral.url, api_key="corral", max_retries=0)

    def ask(block: dict | None) -> int:
        content = [*([block] if block else []), {"type": "text", "text": QUESTION}]
        message = sdk.messages.create(model=VISION_MODEL, max_tokens=1, messages=[{"role": "user", "content": content}],
                                      extra_body={"temperature": 0})
        return message.usage.input_tokens

    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}
    assert ask({"type": "image", "source": source}) == ask(None) + IMAGE_TOKENS


def test_what_is_no_image_is_a_400(corral: ServerProcess, client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        client.generate(model=VISION_MODEL, prompt=QUESTION, images=[b"GIF89a, or so it says"])
    assert (raised.value.status_code, raised.value.error) == (400, "Failed to load image or audio file")
    response = httpx.post(corral.url + "/api/chat", timeout=60, json={
        "model": VISION_MODEL, "messages": [{"role": "user", "content": QUESTION, "images": ["iVBOR*w0"]}]})
    assert (response.status_code, response.json()) == (400, {"error": "illegal base64 data at input byte 5"})


def test_a_model_without_a_projector_still_refuses_images(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model=MODEL, messages=[{"role": "user", "content": QUESTION, "images": [PNG]}])
    assert raised.value.status_code == 400
    assert raised.value.error == "registry.ollama.ai/library/smollm2:latest does not support vision"
