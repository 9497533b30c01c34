"""Sampler chains and output grammars, built the way llama-server builds them for ollama.

Order follows llama.cpp's common sampler: grammar constraint, repetition penalties, top-k,
typical-p, top-p, min-p, temperature, then a seeded draw; temperature <= 0 means greedy. The
penalties sampler is returned separately so the prompt's tail can be fed to it without touching
the grammar, as llama-server does before generating.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import llama_cpp as L
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from runner.engine.native import Vocab
from runner.errors import RequestError
from runner.options import Options


def grammar_for_format(fmt: Any) -> str | None:
    """GBNF for a request's `format`: "json", a JSON schema object, or nothing ("" / null)."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return JSON_GBNF
    if isinstance(fmt, dict):
        try:
            return json_schema_to_gbnf(json.dumps(fmt))
        except Exception as exc:  # the converter raises bare Exceptions and KeyErrors on bad schemas
            raise RequestError(400, f"invalid JSON schema in format: {exc}") from None
    quoted = json.dumps(json.dumps(fmt))  # Go's %q of the raw JSON
    raise RequestError(400, f'invalid format: {quoted}; expected "json" or a valid JSON Schema object')


@dataclass
class SamplerChain:
    """A llama_sampler chain owned by one sequence; free() must be called exactly once."""

    chain: L.llama_sampler_p
    penalties: L.llama_sampler_p

    def sample(self, ctx: L.llama_context_p, index: int) -> int:
        """Sample from the logits at batch index `index` and accept the token into every sampler."""
        return int(L.llama_sampler_sample(self.chain, ctx, index))

    def feed_history(self, tokens: list[int]) -> None:
        for token in tokens:
            L.llama_sampler_accept(self.penalties, token)

    def free(self) -> None:
        L.llama_sampler_free(self.chain)


def build_sampler(vocab: Vocab, options: Options, num_ctx: int, grammar: str | None) -> SamplerChain:
    """Build the chain for one request; raises ValueError when llama.cpp rejects the grammar."""
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    if grammar is not None:
        constraint = L.llama_sampler_init_grammar(vocab.pointer, grammar.encode(), b"root")
        if not constraint:
            L.llama_sampler_free(chain)
            raise ValueError("failed to parse the output grammar")
        L.llama_sampler_chain_add(chain, constraint)
    last_n = num_ctx if options.repeat_last_n < 0 else options.repeat_last_n
    penalties = L.llama_sampler_init_penalties(
        vocab.n_tokens, last_n, options.repeat_penalty, options.frequency_penalty, options.presence_penalty
    )
    L.llama_sampler_chain_add(chain, penalties)
    if options.temperature <= 0:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        return SamplerChain(chain, penalties)
    if options.top_k > 0:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(options.top_k))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_typical(options.typical_p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(options.top_p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(options.min_p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(options.temperature))
    seed = L.LLAMA_DEFAULT_SEED if options.seed < 0 else options.seed & 0xFFFFFFFF
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
    return SamplerChain(chain, penalties)
