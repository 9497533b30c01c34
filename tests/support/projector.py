"""A multimodal projector small enough to write in a test, that llama.cpp's mtmd really loads.

No projector for SmolLM2 exists, and making one from a vision model needs torch, transformers and a
download. This writes a llava-style one (`clip.projector_type` "mlp", the oldest type mtmd knows):
a one-block ViT over 14×14 patches of a 28×28 image, then the two-layer MLP into the text model's
embedding width. Its weights are small random numbers: what it "sees" is noise, but every tensor
has the shape llama.cpp's clip loader checks, so an image goes through the whole path (preprocess,
encode, decode into the text model) as 4 image tokens.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

IMAGE_SIZE = 28
PATCH_SIZE = 14
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
SMOLLM2_EMBEDDING = 576  # the width of SmolLM2-135M's embeddings, which the projector must output


def write_llava_projector(path: Path, text_embedding: int, *, width: int = 16, hidden: int = 32) -> Path:
    """The projector for a text model whose embeddings are `text_embedding` wide (576 for SmolLM2-135M)."""
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_type("mmproj")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    for key, value in (("image_size", IMAGE_SIZE), ("patch_size", PATCH_SIZE), ("embedding_length", width),
                       ("feed_forward_length", 2 * width), ("projection_dim", text_embedding),
                       ("attention.head_count", 1), ("block_count", 1)):
        writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    tensor("v.patch_embd.weight", width, 3, PATCH_SIZE, PATCH_SIZE)
    tensor("v.class_embd", width)
    tensor("v.position_embd.weight", IMAGE_TOKENS + 1, width)
    for norm in ("v.pre_ln", "v.blk.0.ln1", "v.blk.0.ln2"):
        tensor(f"{norm}.weight", width)
        tensor(f"{norm}.bias", width)
    for name, rows, cols in (("attn_q", width, width), ("attn_k", width, width), ("attn_v", width, width),
                             ("attn_out", width, width), ("ffn_up", 2 * width, width), ("ffn_down", width, 2 * width)):
        tensor(f"v.blk.0.{name}.weight", rows, cols)
        tensor(f"v.blk.0.{name}.bias", rows)
    tensor("mm.0.weight", hidden, width)
    tensor("mm.0.bias", hidden)
    tensor("mm.2.weight", text_embedding, hidden)
    tensor("mm.2.bias", text_embedding)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
