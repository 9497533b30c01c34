"""Images in a rendered prompt: where each one goes, and the prompt's tokens with a slot there.

ollama marks image N of a request with the text `[img-N]` in the message it came with (replacing
a literal `[img]`, else prefixed; runner/template/chat.py puts them there) and its runner puts the
image where the marker is in the rendered prompt. The same here: the text around the markers is
tokenized and each marker becomes the image's slot (`media.image_slot`), which the runner child
replaces with the image's own tokens. In raw mode the client writes the markers itself. An image
whose marker is not in the prompt is refused, as llama-server refuses a marker count that does
not match the images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.engine.media import image_slot
from runner.engine.native import Vocab
from runner.errors import RequestError

IMAGE_TOKEN_ESTIMATE = 768  # what ollama counts per image when it drops old messages to fit num_ctx


@dataclass(frozen=True)
class Rendered:
    """A prompt as rendered, with the images its `[img-N]` markers name (N indexes `images`)."""

    text: str
    images: tuple[bytes, ...] = ()


def marker(index: int) -> str:
    return f"[img-{index}]"


def prompt_tokens(vocab: Vocab, prompt: Rendered) -> list[int]:
    """The prompt's tokens, each image's first marker replaced by that image's slot. Blocking."""
    if not prompt.images:
        return vocab.tokenize(prompt.text)
    places = []
    for index in range(len(prompt.images)):
        at = prompt.text.find(marker(index))
        if at < 0:
            raise RequestError(400, f"image {index} has no {marker(index)} marker in the prompt")
        places.append((at, index))
    tokens: list[int] = []
    start = 0
    for at, index in sorted(places):
        tokens += vocab.tokenize(prompt.text[start:at], add_special=start == 0)
        tokens.append(image_slot(index))
        start = at + len(marker(index))
    return tokens + vocab.tokenize(prompt.text[start:], add_special=False)


def count_images(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(m.get("images", ())) for m in messages)


def images_of(messages: Sequence[Mapping[str, Any]]) -> tuple[bytes, ...]:
    """The messages' images in marker order: N counts across the messages a prompt renders."""
    return tuple(image for m in messages for image in m.get("images", ()))
