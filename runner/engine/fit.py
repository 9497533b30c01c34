"""Prompts against the context: ollama's cut for a text prompt that is too long, the refusals for
a prompt with images (which is never cut: cutting through an image leaves nonsense, and old
messages were already dropped by the chat layer, counting 768 tokens an image)."""

from __future__ import annotations

import logging

from runner.engine.media import ImagePosition, ImagePrompt
from runner.errors import RequestError
from runner.options import Options

log = logging.getLogger(__name__)

PROMPT_TOO_LONG = (
    "the prompt is longer than the context length currently available to the model; shorten the "
    "prompt, adjust the context length in settings, or use a model with a longer context length"
)
ENDS_WITH_IMAGE = "the prompt ends with an image; the model answers only after text"


def fit_prompt(
    tokens: list[int], options: Options, truncate: bool, shift: bool, num_ctx: int, add_bos: bool
) -> list[int]:
    """Apply ollama's rule for prompts longer than the context: keep num_keep and cut the middle."""
    limit = num_ctx - 1
    if len(tokens) <= limit:
        return tokens
    if not truncate or not shift:
        raise RequestError(400, PROMPT_TOO_LONG)
    keep = len(tokens) if options.num_keep < 0 else options.num_keep + int(add_bos)
    keep = max(0, min(keep, limit))
    target = num_ctx - max((num_ctx - keep) // 2, 1)
    discard = len(tokens) - target
    log.warning("truncating input prompt: limit=%d prompt=%d keep=%d", target, len(tokens), keep)
    return tokens[:keep] + tokens[keep + discard :]


def check_image_prompt(prompt: ImagePrompt, num_ctx: int) -> None:
    """400 unless the prompt fits whole and ends with text: mtmd decodes an image without logits,
    so nothing could be sampled after a prompt that ends with one."""
    if prompt.cells > num_ctx - 1:
        raise RequestError(400, PROMPT_TOO_LONG)
    if prompt.inputs and isinstance(prompt.inputs[-1], ImagePosition):
        raise RequestError(400, ENDS_WITH_IMAGE)
