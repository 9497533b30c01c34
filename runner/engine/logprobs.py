"""Log-probabilities of sampled tokens, in ollama's `logprobs` shape.

Like llama-server's `n_probs`, they come from the model's raw logits (a softmax over the whole
vocabulary, before penalties, temperature or grammar), so they describe the model, not the
sampler: `{"token": text, "logprob": x, "top_logprobs": [{"token", "logprob"}, ...]}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def token_logprobs(logits: np.ndarray, token: int, top: int, text: Callable[[int], str]) -> dict[str, Any]:
    """Entry for `token` given the logits it was sampled from; `top` alternatives when top > 0."""
    peak = float(logits.max())
    log_norm = peak + float(np.log(np.exp(logits - peak).sum()))
    entry: dict[str, Any] = {"token": text(token), "logprob": float(logits[token]) - log_norm}
    if top > 0:
        best = np.argpartition(logits, -top)[-top:]
        best = best[np.argsort(-logits[best], kind="stable")]
        entry["top_logprobs"] = [{"token": text(int(t)), "logprob": float(logits[t]) - log_norm} for t in best]
    return entry
