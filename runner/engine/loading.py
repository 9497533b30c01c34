"""Loading a model into llama.cpp: the weights, a context of the engine's shape, LoRA adapters.

Each load step turns llama.cpp's NULL into a ModelLoadError naming the cause llama.cpp logged
(`take_error`), so a load that fails says why.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

import llama_cpp as L

from runner.engine.native import take_error
from runner.errors import ModelLoadError
from runner.spec import ModelSpec


@dataclass(frozen=True)
class EngineSettings:
    """How to load a model; two loads with equal settings are interchangeable."""

    num_ctx: int  # cells per sequence
    num_parallel: int = 1
    num_batch: int = 512
    num_threads: int = 0  # 0: every core this process may use
    gpu_layers: int = 0
    main_gpu: int = 0
    flash_attention: bool | None = None  # None: llama.cpp decides
    use_mmap: bool = True


def threads(settings: EngineSettings) -> int:
    """Compute threads: as set, else every core this process may use."""
    return settings.num_threads or len(os.sched_getaffinity(0))


def flash_attn_type(settings: EngineSettings) -> int:
    return {
        None: L.LLAMA_FLASH_ATTN_TYPE_AUTO,
        True: L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        False: L.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }[settings.flash_attention]


def load_model(spec: ModelSpec, settings: EngineSettings) -> Any:
    params = L.llama_model_default_params()
    params.n_gpu_layers = settings.gpu_layers
    params.main_gpu = settings.main_gpu
    params.load_mode = L.LLAMA_LOAD_MODE_MMAP if settings.use_mmap else L.LLAMA_LOAD_MODE_NONE
    take_error()
    model = L.llama_model_load_from_file(str(spec.model_path).encode(), params)
    if not model:
        detail = take_error() or "llama.cpp could not load the file"
        arch = spec.architecture or "unknown"
        raise ModelLoadError(f'unable to load model "{spec.name}" (architecture "{arch}"): {detail}')
    return model


def context_params(settings: EngineSettings) -> Any:
    """One context for every sequence: num_parallel of num_ctx cells each, none shared."""
    params = L.llama_context_default_params()
    n_ctx = settings.num_ctx * settings.num_parallel
    params.n_ctx = n_ctx
    params.n_seq_max = settings.num_parallel
    params.kv_unified = False
    params.n_batch = params.n_ubatch = max(1, min(settings.num_batch, n_ctx))
    params.n_threads = params.n_threads_batch = threads(settings)
    params.flash_attn_type = flash_attn_type(settings)
    params.no_perf = True
    return params


def new_context(model: Any, params: Any, name: str) -> Any:
    take_error()
    ctx = L.llama_init_from_model(model, params)
    if not ctx:
        detail = take_error() or "out of memory?"
        raise ModelLoadError(f'unable to create a context of {params.n_ctx} tokens for "{name}": {detail}')
    return ctx


def load_adapters(model: Any, ctx: Any, spec: ModelSpec, adapters: list[Any]) -> None:
    """The spec's LoRA adapters, applied to `ctx` at full scale; each loaded one is appended to
    `adapters` as it loads, so the caller frees them even when a later one fails."""
    if not spec.adapters:
        return
    for path in spec.adapters:
        adapter = L.llama_adapter_lora_init(model, str(path).encode())
        if not adapter:
            raise ModelLoadError(f"unable to load adapter {path.name}: {take_error()}")
        adapters.append(adapter)
    handles = (L.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
    scales = (ctypes.c_float * len(adapters))(*([1.0] * len(adapters)))
    if L.llama_set_adapters_lora(ctx, handles, len(adapters), scales) != 0:
        raise ModelLoadError(f"unable to apply adapters to {spec.name}")
