"""Images for a model with a projector: llama.cpp's multimodal library (mtmd) beside the text model.

The server tokenizes a prompt's text itself and leaves one slot per image (`image_slot`, a negative
id in `Completion.tokens`); here each slot becomes what mtmd makes of that image: the chunks it
tokenizes it into (the image's embedding positions, plus any text tokens the model wraps images
in). An image chunk is encoded and decoded into its sequence by mtmd's helper on the engine's
worker thread, a decode of its own, since a llama.cpp batch holds tokens or embeddings, not both.

Images are decoded with Pillow, in the formats llama-server reads (PNG, JPEG, GIF, BMP) plus WebP,
which ollama converts before handing it on. Not with mtmd's own loader: for bytes that are no
image it tries audio, then launches `ffprobe` on them as a video.

The prompt cache compares positions: an image's positions are `ImagePosition`s keyed by the
image's sha256, so the same image at the same place is reused and a different one never is.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as L
from llama_cpp import mtmd_cpp as M
from PIL import Image

from runner.engine import loading
from runner.engine.loading import EngineSettings
from runner.engine.native import log_callback, take_error
from runner.errors import ModelLoadError, RequestError

NOT_AN_IMAGE = "Failed to load image or audio file"  # llama-server's words, which ollama passes on
_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")


def image_slot(index: int) -> int:
    """The placeholder of image `index` among a prompt's tokens (token ids are never negative)."""
    return -1 - index


def slot_index(token: int) -> int | None:
    """The image a prompt token stands for, or None for a real token."""
    return -1 - token if token < 0 else None


@dataclass(frozen=True)
class ImagePosition:
    """One position of an image chunk in a sequence. Equal only for the same image's same chunk at
    the same offset, which is what lets the prompt cache keep an image it already decoded."""

    key: str  # the image's sha256 and the chunk's index among the image's chunks
    offset: int  # 0 at the chunk's first position
    extra_cells: int = 0  # on the first position: KV cells beyond its positions (M-RoPE images)


Input = int | ImagePosition


@dataclass
class ImagePrompt:
    """A prompt with its images expanded: what the sequence is fed, position by position."""

    inputs: tuple[Input, ...]
    cells: int  # KV cells the prompt fills: text tokens plus every image chunk's tokens
    chunks: dict[str, Any] = field(default_factory=dict)  # ImagePosition.key → its mtmd chunk
    _owned: list[Any] = field(default_factory=list)  # mtmd chunk lists, freed with the prompt

    def free(self) -> None:
        for owned in self._owned:
            M.mtmd_input_chunks_free(owned)
        self._owned.clear()
        self.chunks.clear()


def _pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and RGB bytes of an image; 400 with llama-server's message when it is none."""
    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as image:
            rgb = image.convert("RGB")
    except Exception:  # whatever a decoder raises about bytes from the network means the same
        raise RequestError(400, NOT_AN_IMAGE) from None
    return rgb.width, rgb.height, rgb.tobytes()


class Media:
    """The mtmd context of one loaded model; its calls that compute belong to the engine's worker."""

    def __init__(self, projector: Path, model: Any, settings: EngineSettings) -> None:
        M.mtmd_helper_log_set(log_callback, ctypes.c_void_p(0))
        params = M.mtmd_context_params_default()
        params.use_gpu = settings.gpu_layers != 0  # the encoder goes where the model's layers go
        params.n_threads = loading.threads(settings)
        params.flash_attn_type = loading.flash_attn_type(settings)
        params.print_timings = False
        take_error()
        self._ctx = M.mtmd_init_from_file(str(projector).encode(), model, params)
        if not self._ctx:
            raise ModelLoadError(f"unable to load projector {projector.name}: {take_error() or 'mtmd refused it'}")
        if not M.mtmd_support_vision(self._ctx):
            self.close()
            raise ModelLoadError(f"projector {projector.name} has no vision encoder")

    def expand(self, tokens: Sequence[int], images: Sequence[bytes]) -> ImagePrompt:
        """The prompt with each image slot replaced by the image's chunks. Blocking (decoding,
        resizing); safe beside the worker's decodes, as llama-server tokenizes beside its own."""
        prompt = ImagePrompt(inputs=(), cells=0)
        inputs: list[Input] = []
        try:
            for token in tokens:
                index = slot_index(token)
                if index is None:
                    inputs.append(token)
                    prompt.cells += 1
                else:
                    self._add_image(prompt, inputs, images[index])
        except BaseException:
            prompt.free()
            raise
        prompt.inputs = tuple(inputs)
        return prompt

    def _add_image(self, prompt: ImagePrompt, inputs: list[Input], data: bytes) -> None:
        width, height, pixels = _pixels(data)
        bitmap = M.mtmd_bitmap_init(width, height, ctypes.cast(pixels, ctypes.POINTER(ctypes.c_uint8)))  # copied
        chunks = M.mtmd_input_chunks_init()
        prompt._owned.append(chunks)
        try:
            part = M.mtmd_input_part(text=None, bitmap=bitmap)
            parts = (ctypes.POINTER(M.mtmd_input_part) * 1)(ctypes.pointer(part))
            status = M.mtmd_tokenize_from_parts(self._ctx, chunks, parts, 1, False)
        finally:
            M.mtmd_bitmap_free(bitmap)
        if status != 0:
            raise RequestError(400, f"{NOT_AN_IMAGE}: the projector could not read a {width}x{height} image")
        digest = hashlib.sha256(data).hexdigest()
        for i in range(M.mtmd_input_chunks_size(chunks)):
            chunk = M.mtmd_input_chunks_get(chunks, i)
            if M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t(0)
                text = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                inputs.extend(text[: count.value])
                prompt.cells += count.value
                continue
            key = f"{digest}:{i}"
            positions = M.mtmd_input_chunk_get_n_pos(chunk)
            cells = M.mtmd_input_chunk_get_n_tokens(chunk)
            prompt.chunks[key] = chunk
            inputs.append(ImagePosition(key, 0, cells - positions))
            inputs.extend(ImagePosition(key, offset) for offset in range(1, positions))
            prompt.cells += cells

    def evaluate(self, chunk: Any, context: Any, n_past: int, seq_id: int, n_batch: int) -> int:
        """Encode an image chunk and decode it into sequence `seq_id` at `n_past`; the next position.
        On the worker thread: it computes, like every decode of this model."""
        new_n_past = L.llama_pos(0)
        take_error()
        status = M.mtmd_helper_eval_chunk_single(
            self._ctx, context, chunk, n_past, seq_id, n_batch, False, ctypes.byref(new_n_past)
        )
        if status != 0:
            raise RuntimeError(take_error() or f"image evaluation failed with status {status}")
        return int(new_n_past.value)

    def close(self) -> None:
        if self._ctx:
            M.mtmd_free(self._ctx)
            self._ctx = None
