"""Load sizing without loading: offload and footprint estimates from GGUF header values, and the
engine settings a request resolves to (no GPU needed to check the arithmetic)."""

from __future__ import annotations

from pathlib import Path

from runner.engine.memory import footprint, kv_cache_bytes, layer_count, offload_layers, place
from runner.options import build_options
from runner.scheduler import RunnerConfig, Scheduler
from runner.spec import ModelSpec

GGUF = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.embedding_length": 576,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
}
SPEC = ModelSpec(name="m:latest", digest="d", model_path=Path("/nonexistent"), size=93_000_000, gguf=GGUF)


def test_kv_cache_size_follows_the_header() -> None:
    # 30 layers × (64 + 64 head dims) × 3 kv heads × 2 bytes per cell
    assert kv_cache_bytes(SPEC, 1) == 30 * 128 * 3 * 2
    assert layer_count(SPEC) == 31


def test_offload_layers() -> None:
    assert offload_layers(SPEC, num_gpu=-1, n_ctx=2048, gpu=False, max_vram=0) == 0
    assert offload_layers(SPEC, num_gpu=-1, n_ctx=2048, gpu=True, max_vram=0) == 31
    assert offload_layers(SPEC, num_gpu=10, n_ctx=2048, gpu=True, max_vram=0) == 10
    per_layer = (SPEC.size + kv_cache_bytes(SPEC, 2048)) / 31
    assert offload_layers(SPEC, num_gpu=-1, n_ctx=2048, gpu=True, max_vram=int(per_layer * 12.5)) == 12


def test_footprint_splits_by_offloaded_layers() -> None:
    total, on_gpu = footprint(SPEC, 2048, 0)
    assert total == SPEC.size + kv_cache_bytes(SPEC, 2048) and on_gpu == 0
    assert footprint(SPEC, 2048, 31) == (total, total)


def test_engine_settings_follow_the_config_and_options() -> None:
    spec = ModelSpec(
        name="m:latest",
        digest="d",
        model_path=Path("/nonexistent"),
        size=93_000_000,
        gguf={**GGUF, "llama.context_length": 8192},
    )
    config = RunnerConfig(context_length=2048, num_parallel=3, flash_attention=False, llm_library="cpu")
    scheduler = Scheduler(config)
    settings = scheduler.engine_settings(spec, build_options(config.context_length).runner, embedding_only=False)
    assert (settings.num_ctx, settings.num_parallel, settings.flash_attention) == (2048, 3, False)
    assert settings.gpu_layers == 0  # OLLAMA_LLM_LIBRARY=cpu
    huge = build_options(0, {"num_ctx": 1_000_000, "num_thread": 3, "num_batch": 64}).runner
    clamped = scheduler.engine_settings(spec, huge, embedding_only=True)
    assert (clamped.num_ctx, clamped.num_parallel, clamped.num_threads, clamped.num_batch) == (8192, 1, 3, 64)


def test_place_puts_a_model_that_fits_on_the_least_committed_gpu() -> None:
    gpus = ("0", "1", "2")
    assert place(gpus, {}, need=10, main_gpu=0, max_vram=0) == ("0",)
    assert place(gpus, {"0": 50, "1": 20}, need=10, main_gpu=0, max_vram=0) == ("2",)
    assert place(gpus, {"0": 50, "1": 20, "2": 30}, need=10, main_gpu=0, max_vram=100) == ("1",)


def test_place_spreads_a_model_that_fits_on_no_single_gpu() -> None:
    assert place(("0", "1"), {"0": 50, "1": 60}, need=60, main_gpu=0, max_vram=100) == ("0", "1")


def test_place_honours_main_gpu() -> None:
    assert place(("3", "5"), {"5": 90}, need=10, main_gpu=1, max_vram=0) == ("5",)
    assert place(("3", "5"), {}, need=10, main_gpu=7, max_vram=0) == ("3", "5")
