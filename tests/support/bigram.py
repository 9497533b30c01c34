"""A tiny llama GGUF whose greedy output is known in advance: an exact bigram model.

A 135M model's greedy text differs between CPUs and llama.cpp builds, so a test that reads the
answer must force it. This writes a real llama-architecture GGUF that llama.cpp loads in
milliseconds and whose next token depends only on the current one:

* every token's embedding is a one-hot vector of its *class*; attention and FFN outputs are
  zero, so the residual stream reaching the output is that one-hot vector (times RMSNorm's √n);
* the output matrix has one non-zero entry per class, pointing at the token that follows it.

So the logits are exactly 0 everywhere except one token, on every CPU. The vocabulary is an SPM
one: `<unk>`, `<s>`, `</s>`, the 256 byte tokens (ordinary prompt text tokenizes to bytes, all
one class), the special tokens a template needs (each its own class) and the pieces of the
scripted answers. `chains` maps what the prompt ends with — `""` for ordinary text, or a special
token such as `"<think>"` — to the pieces the model then writes, followed by `</s>`; a chain
may instead end with a special token, whose own chain then continues the answer. An `endless`
model starts each chain again instead of ending it: it talks until `num_predict` stops it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import gguf
import numpy as np

from tests.support.models import write_gguf

BYTE_TEXT = ""  # the chain key for "the prompt ends in ordinary text" (a byte token)
SPECIALS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>")
UNK, BOS, EOS = 0, 1, 2
FIRST_BYTE = 3
_SPACE = "\u2581"  # how SPM vocabularies spell a space


def write_bigram_gguf(path: Path, chains: Mapping[str, Sequence[str]], *,
                      specials: Sequence[str] = SPECIALS, endless: bool = False) -> Path:
    """Write the model to `path`; each piece may appear in one chain, once (a bigram has one successor)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    for special in specials:
        tokens.append(special)
        types.append(gguf.TokenType.USER_DEFINED)
    handovers = {start: chain[-1] for start, chain in chains.items() if chain and chain[-1] in specials}
    pieces = [piece for start, chain in chains.items() for piece in chain[: -1 if start in handovers else None]]
    if len(set(pieces)) != len(pieces):
        raise ValueError("a bigram model gives each piece one successor: pieces must be distinct")
    unknown = set(chains) - {BYTE_TEXT, *specials}
    if unknown:
        raise ValueError(f"chains must start after ordinary text or a special token, not {sorted(unknown)}")
    for piece in pieces:
        if piece in specials:
            raise ValueError(f"{piece!r} is a special token, not a piece")
        tokens.append(piece.replace(" ", _SPACE))
        types.append(gguf.TokenType.NORMAL)
    index = {text: i for i, text in enumerate(tokens)}
    index.update({piece: index[piece.replace(" ", _SPACE)] for piece in pieces})

    # class 0: every byte token and the control tokens; then one class per special and per piece
    token_class = [0] * len(tokens)
    classes = 1
    for text in (*specials, *pieces):
        token_class[index[text]] = classes
        classes += 1
    width = max(64, -(-classes // 64) * 64)

    successor: dict[int, int] = {}  # class → token
    for start, chain in chains.items():
        after = 0 if start == BYTE_TEXT else token_class[index[start]]
        for piece in chain:
            successor[after] = index[piece]
            after = token_class[index[piece]]
        if start not in handovers:
            successor[after] = index[chain[0]] if endless and chain else EOS
    embeddings = np.zeros((len(tokens), width), dtype=np.float32)
    embeddings[np.arange(len(tokens)), token_class] = 1.0
    output = np.zeros((len(tokens), width), dtype=np.float32)
    for cls in range(classes):
        output[successor.get(cls, EOS), cls] = 1.0

    def kv(writer: gguf.GGUFWriter) -> None:
        writer.add_name("bigram")
        writer.add_context_length(2048)
        writer.add_embedding_length(width)
        writer.add_block_count(1)
        writer.add_feed_forward_length(width)
        writer.add_head_count(1)
        writer.add_head_count_kv(1)
        writer.add_rope_dimension_count(width)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores([0.0] * len(tokens))
        writer.add_token_types(types)
        writer.add_bos_token_id(BOS)
        writer.add_eos_token_id(EOS)
        writer.add_unk_token_id(UNK)
        writer.add_add_bos_token(False)
        writer.add_add_space_prefix(False)

    zeros = np.zeros((width, width), dtype=np.float32)
    tensors = {
        "token_embd.weight": embeddings,
        "output_norm.weight": np.ones(width, dtype=np.float32),
        "output.weight": output,
        "blk.0.attn_norm.weight": np.ones(width, dtype=np.float32),
        "blk.0.attn_q.weight": zeros,
        "blk.0.attn_k.weight": zeros,
        "blk.0.attn_v.weight": zeros,
        "blk.0.attn_output.weight": zeros,
        "blk.0.ffn_norm.weight": np.ones(width, dtype=np.float32),
        "blk.0.ffn_gate.weight": zeros,
        "blk.0.ffn_up.weight": zeros,
        "blk.0.ffn_down.weight": zeros,
    }
    return write_gguf(path, "llama", kv, tensors)


# The script every test model uses: after ordinary text (a chatml prompt ends in "\n") it answers
# ANSWER; after "<think>" it thinks THOUGHT, closes the tag and answers AFTER_THINKING.
ANSWER_PIECES = ("The", " capital", " of", " France", " is", " Paris", ".")
ANSWER = "".join(ANSWER_PIECES)
THOUGHT_PIECES = ("Let", " me", " think")
THOUGHT = "".join(THOUGHT_PIECES)
AFTER_THINKING_PIECES = ("Answer:", " yes")
AFTER_THINKING = "".join(AFTER_THINKING_PIECES)
SCRIPT = {
    BYTE_TEXT: ANSWER_PIECES,
    "<think>": (*THOUGHT_PIECES, "</think>"),
    "</think>": AFTER_THINKING_PIECES,
}

# A chatml template for a thinking model: it opens `<think>` for the answer when thinking is on,
# so the scripted model thinks THOUGHT and answers AFTER_THINKING; with thinking off it answers ANSWER.
THINKING_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if .Think }}<think>{{ end }}"""


def write_scripted_gguf(directory: Path) -> Path:
    """The bigram model answering SCRIPT, written once into `directory`."""
    path = directory / "bigram.gguf"
    return path if path.exists() else write_bigram_gguf(path, SCRIPT)


def write_endless_gguf(directory: Path) -> Path:
    """A bigram model that never ends its answer ("tick tock tick…"): every request runs to num_predict."""
    path = directory / "endless.gguf"
    return path if path.exists() else write_bigram_gguf(path, {BYTE_TEXT: ("tick", " tock ")}, endless=True)
