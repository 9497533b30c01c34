"""The test projector (tests/support/projector.py) is one llama.cpp's multimodal library (mtmd)
loads next to SmolLM2 and runs: an image becomes image tokens decoded into the text model."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp as mtmd

from tests.support.models import smollm2_gguf
from tests.support.projector import IMAGE_SIZE, IMAGE_TOKENS, SMOLLM2_EMBEDDING, write_llava_projector


def test_an_image_goes_through_the_projector_into_smollm2(tmp_path: Path) -> None:
    projector = write_llava_projector(tmp_path / "mmproj.gguf", SMOLLM2_EMBEDDING)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(smollm2_gguf()).encode(), llama_cpp.llama_model_default_params())
    context_params = llama_cpp.llama_context_default_params()
    context_params.n_ctx = context_params.n_batch = 256
    context = llama_cpp.llama_init_from_model(model, context_params)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads = False, 1
    media = mtmd.mtmd_init_from_file(str(projector).encode(), model, params)
    try:
        assert media and mtmd.mtmd_support_vision(media)
        pixels = np.random.default_rng(1).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        bitmap = mtmd.mtmd_bitmap_init(IMAGE_SIZE, IMAGE_SIZE, pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        prompt = b"<|im_start|>user\n" + mtmd.mtmd_default_marker() + b"What is this?<|im_end|>\n"
        text = mtmd.mtmd_input_text(text=prompt, text_len=len(prompt), add_special=True, parse_special=True)
        chunks = mtmd.mtmd_input_chunks_init()
        assert mtmd.mtmd_tokenize(media, chunks, ctypes.byref(text), (ctypes.c_void_p * 1)(bitmap), 1) == 0
        kinds = [mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, i))
                 for i in range(mtmd.mtmd_input_chunks_size(chunks))]
        assert kinds == [mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT, mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE,
                         mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT]
        assert mtmd.mtmd_input_chunk_get_n_tokens(mtmd.mtmd_input_chunks_get(chunks, 1)) == IMAGE_TOKENS
        n_past = llama_cpp.llama_pos(0)
        assert mtmd.mtmd_helper_eval_chunks(media, context, chunks, 0, 0, 256, True, ctypes.byref(n_past)) == 0
        assert n_past.value == mtmd.mtmd_helper_get_n_pos(chunks)
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
    finally:
        mtmd.mtmd_free(media)
        llama_cpp.llama_free(context)
        llama_cpp.llama_model_free(model)
