"""Images through the runner: SmolLM2 with the test projector (tests/support/projector.py), whose
random weights make an image 4 tokens of noise. What is checked is that the image reached the model
(its tokens counted, the first token's log-probability moved) and what the prompt cache does with
it, never what the model answers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from runner.engine.fit import ENDS_WITH_IMAGE, PROMPT_TOO_LONG
from runner.spec import ModelSpec
from tests.support.images import BLUE, RED, encoded_image
from tests.support.projector import IMAGE_TOKENS, SMOLLM2_EMBEDDING, write_llava_projector
from tests.support.runner import Harness, StartRunner, smollm2_spec

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "seed": 1, "num_predict": 1}
QUESTION = "What is this?"


def vision_spec(directory: Path) -> ModelSpec:
    return smollm2_spec(projector=write_llava_projector(directory / "mmproj.gguf", SMOLLM2_EMBEDDING))


@pytest.fixture
async def seer(start_runner: StartRunner, tmp_path: Path) -> Harness:
    return await start_runner(specs=[vision_spec(tmp_path)])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def post(harness: Harness, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(harness.url + path, json=body) as response:
        return response.status, await response.json(content_type=None)


async def ask(harness: Harness, *images: bytes, content: str = QUESTION) -> dict[str, Any]:
    """A one-token greedy chat answer with the first token's log-probability."""
    message: dict[str, Any] = {"role": "user", "content": content}
    if images:
        message["images"] = [b64(image) for image in images]
    status, answer = await post(harness, "/api/chat", {"model": "smollm2", "messages": [message], "stream": False,
                                                       "options": GREEDY, "logprobs": True})
    assert status == 200, answer
    return answer


def first_logprob(answer: dict[str, Any]) -> float:
    return answer["logprobs"][0]["logprob"]


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
async def test_each_format_reaches_the_model_as_its_image_tokens(seer: Harness, image_format: str) -> None:
    plain = await ask(seer)
    seen = await ask(seer, encoded_image(RED, image_format))
    assert seen["prompt_eval_count"] == plain["prompt_eval_count"] + IMAGE_TOKENS
    assert first_logprob(seen) != pytest.approx(first_logprob(plain), abs=1e-4)


async def test_two_images_take_their_tokens_each(seer: Harness) -> None:
    one = await ask(seer, encoded_image(RED))
    two = await ask(seer, encoded_image(RED), encoded_image(BLUE))
    assert two["prompt_eval_count"] == one["prompt_eval_count"] + IMAGE_TOKENS


async def test_the_prompt_cache_reuses_an_image_only_for_the_same_image(seer: Harness) -> None:
    """One sequence (NUM_PARALLEL 1), so each request starts from what the previous one left: a
    blue image after a red one must not reuse the red one's positions, and gives what a fresh
    sequence gives; the same image again may reuse them, and gives what it gave."""
    red = first_logprob(await ask(seer, encoded_image(RED)))
    blue_after_red = first_logprob(await ask(seer, encoded_image(BLUE)))
    blue_again = first_logprob(await ask(seer, encoded_image(BLUE)))
    status, _ = await post(seer, "/api/generate", {"model": "smollm2", "keep_alive": 0})
    assert status == 200
    blue_fresh = first_logprob(await ask(seer, encoded_image(BLUE)))
    assert red != pytest.approx(blue_fresh, abs=1e-4)
    assert blue_after_red == pytest.approx(blue_fresh, abs=1e-5)
    assert blue_again == pytest.approx(blue_fresh, abs=1e-5)


async def test_generate_puts_the_images_in_the_prompt_and_raw_mode_where_the_client_marks(seer: Harness) -> None:
    body = {"model": "smollm2", "prompt": QUESTION, "stream": False, "options": GREEDY}
    _, plain = await post(seer, "/api/generate", body)
    _, seen = await post(seer, "/api/generate", {**body, "images": [b64(encoded_image(RED))]})
    assert seen["prompt_eval_count"] == plain["prompt_eval_count"] + IMAGE_TOKENS
    raw = {**body, "raw": True, "images": [b64(encoded_image(RED))]}
    _, marked = await post(seer, "/api/generate", {**raw, "prompt": f"[img-0]{QUESTION}"})
    _, unmarked = await post(seer, "/api/generate", {**body, "raw": True})
    assert marked["prompt_eval_count"] == unmarked["prompt_eval_count"] + IMAGE_TOKENS


async def test_old_messages_go_first_counting_each_image_as_768_tokens(seer: Harness) -> None:
    """A vision model gets at least 2048 tokens of context (ollama's floor); three images count
    2304, so the first turn is dropped although the text is short."""
    image = b64(encoded_image(RED))
    messages = []
    for turn in range(3):
        messages += [{"role": "user", "content": f"turn {turn}", "images": [image]},
                     {"role": "assistant", "content": "ok"}]
    body = {"model": "smollm2", "messages": messages[:-1], "_debug_render_only": True}
    status, answer = await post(seer, "/api/chat", body)
    assert status == 200, answer
    rendered = answer["_debug_info"]["rendered_template"]
    assert "turn 0" not in rendered and "[img-0]turn 1" in rendered and "[img-1]turn 2" in rendered
    assert answer["_debug_info"]["image_count"] == 2


async def test_a_literal_img_tag_is_where_the_image_goes(seer: Harness) -> None:
    body = {"model": "smollm2", "_debug_render_only": True,
            "messages": [{"role": "user", "content": "left [img] right", "images": [b64(encoded_image(RED))]}]}
    _, answer = await post(seer, "/api/chat", body)
    assert "user\nleft [img-0] right<|im_end|>" in answer["_debug_info"]["rendered_template"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"prompt": QUESTION, "images": ["aGk"]}, "illegal base64 data at input byte 0"),
        ({"prompt": QUESTION, "images": [b64(b"no image at all")]}, "Failed to load image or audio file"),
        ({"prompt": QUESTION, "images": [b64(encoded_image(RED)[:40])]}, "Failed to load image or audio file"),
        ({"prompt": QUESTION, "raw": True, "images": [b64(encoded_image(RED))]},
         "image 0 has no [img-0] marker in the prompt"),
        ({"prompt": QUESTION, "template": "{{ .Prompt }}", "images": [b64(encoded_image(RED))]},
         "image 0 has no [img-0] marker in the prompt"),
        ({"prompt": f"{QUESTION}[img-0]", "raw": True, "images": [b64(encoded_image(RED))]}, ENDS_WITH_IMAGE),
        ({"prompt": "[img-0]" + "word " * 2100, "raw": True, "images": [b64(encoded_image(RED))]}, PROMPT_TOO_LONG),
    ],
)  # fmt: skip
async def test_bad_images_are_the_clients_400_and_the_model_lives_on(
    seer: Harness, body: dict[str, Any], error: str
) -> None:
    status, answer = await post(seer, "/api/generate", {"model": "smollm2", "stream": False, **body})
    assert (status, answer) == (400, {"error": error})
    assert (await ask(seer, encoded_image(BLUE)))["done"]
