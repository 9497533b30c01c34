"""Estimates of a model's memory: how many layers to offload and what /api/ps reports.

Ollama sizes a load from the GGUF header before starting it (weights per layer plus the KV cache
for num_ctx × num_parallel); the same header keys are in ModelSpec.gguf, so the estimate needs
no file access. It is an estimate: llama.cpp's compute buffers are not counted.
"""

from __future__ import annotations

from runner.spec import ModelSpec

_F16_BYTES = 2


def _kv(spec: ModelSpec, key: str, default: int = 0) -> int:
    value = spec.gguf.get(f"{spec.architecture}.{key}", default)
    if isinstance(value, list | tuple):  # per-layer arrays (e.g. head_count_kv): take the largest
        value = max(value, default=default)
    return int(value)


def layer_count(spec: ModelSpec) -> int:
    """Repeating blocks plus the output layer, the unit ollama counts when it offloads."""
    return _kv(spec, "block_count") + 1


def kv_cache_bytes(spec: ModelSpec, n_ctx: int) -> int:
    """f16 K and V for every layer and every cell of an n_ctx-cell cache."""
    embd = _kv(spec, "embedding_length")
    heads = _kv(spec, "attention.head_count", 1) or 1
    heads_kv = _kv(spec, "attention.head_count_kv", heads) or heads
    head_dim_k = _kv(spec, "attention.key_length", embd // heads)
    head_dim_v = _kv(spec, "attention.value_length", embd // heads)
    per_cell = (head_dim_k + head_dim_v) * heads_kv * _F16_BYTES
    return per_cell * n_ctx * _kv(spec, "block_count")


def offload_layers(spec: ModelSpec, num_gpu: int, n_ctx: int, gpu: bool, max_vram: int) -> int:
    """Layers to put on the GPU: none without one, `num_gpu` when given, else all that fit max_vram."""
    if not gpu:
        return 0
    layers = layer_count(spec)
    wanted = layers if num_gpu < 0 else min(num_gpu, layers)
    if max_vram <= 0:
        return wanted
    per_layer = (spec.size + kv_cache_bytes(spec, n_ctx)) / layers
    return min(wanted, int(max_vram // per_layer)) if per_layer > 0 else wanted


def footprint(spec: ModelSpec, n_ctx: int, gpu_layers: int) -> tuple[int, int]:
    """(total bytes, bytes on the GPU) of a loaded model, for /api/ps."""
    total = spec.size + kv_cache_bytes(spec, n_ctx)
    return total, total * min(gpu_layers, layer_count(spec)) // layer_count(spec)


def place(
    devices: tuple[str, ...], committed: dict[str, int], need: int, main_gpu: int, max_vram: int
) -> tuple[str, ...]:
    """The GPUs a runner child gets (its CUDA_VISIBLE_DEVICES), ollama's rule on corral's accounting.

    An explicit main_gpu names one device; otherwise the model goes to the device with the least
    memory committed to loaded models, when it fits there under max_vram (0: no cap), and across
    every device when it fits on none alone. `committed` is per device, from what the children
    measured after their loads (or the estimate where they could not).
    """
    if main_gpu > 0:
        return (devices[main_gpu],) if main_gpu < len(devices) else devices
    emptiest = min(devices, key=lambda d: (committed.get(d, 0), devices.index(d)))
    if max_vram <= 0 or committed.get(emptiest, 0) + need <= max_vram:
        return (emptiest,)
    return devices
