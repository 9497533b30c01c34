"""The vocabulary the server keeps of a model whose weights live in a runner child."""

from __future__ import annotations

import pytest

from runner.engine.native import Vocab
from tests.support.models import smollm2_gguf


def test_a_vocabulary_only_load_tokenizes_like_the_model() -> None:
    vocab = Vocab.from_file(smollm2_gguf())
    tokens = vocab.tokenize("Hello world", add_special=False)
    assert vocab.n_tokens == 49152 and tokens and vocab.detokenize(tokens) == "Hello world"


@pytest.mark.parametrize("token", [49152, 999_999_999, -1])
def test_a_token_outside_the_vocabulary_is_an_error_not_an_abort(token: int) -> None:
    """llama.cpp throws std::out_of_range for these, which would end the server process."""
    vocab = Vocab.from_file(smollm2_gguf())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.detokenize([1, token])
