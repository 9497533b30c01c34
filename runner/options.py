"""Request options as ollama reads them: defaults, then the model's params layer, then the request.

Ollama decodes `options` into one struct (`api.Options` with the embedded `api.Runner`) by JSON
tag, with per-field type checks and their exact messages ("option \"top_k\" must be of type
integer"); unknown keys are ignored with a warning. `keep_alive` is a Go duration or a number of
seconds. The same rules apply here so clients see the same acceptance and the same errors.

Beyond ollama's type checks, values llama.cpp cannot take are refused here with a 400 rather
than handed down: numbers past a C `int32` (ctypes would wrap them silently into negative sizes),
non-finite floats (a Modelfile may spell `nan`), a repeat-penalty window of more tokens than any
context holds (llama.cpp allocates it up front) and more threads than a machine could run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.duration import parse_go_duration
from runner.errors import RequestError

log = logging.getLogger(__name__)

_INT32 = (-(2**31), 2**31 - 1)
_BOUNDS: dict[str, tuple[int, int]] = {
    "repeat_last_n": (-1, 1 << 20),  # -1: the whole context
    "num_thread": (-(2**31), 1024),  # 0 or less: every core
}
_UNBOUNDED = frozenset({"seed", "num_predict"})  # seed is masked to 32 bits; num_predict capped as ollama does

DEFAULT_NUM_CTX = 4096  # ollama's automatic num_ctx below 23 GiB of VRAM (and on CPU)
FOREVER = math.inf  # keep_alive for "never unload"


@dataclass(frozen=True)
class RunnerOptions:
    """The options that shape a loaded model: changing any of them means a reload (sched.needsReload)."""

    num_ctx: int
    num_batch: int = 512
    num_gpu: int = -1  # -1: as many layers as fit
    main_gpu: int = 0
    use_mmap: bool = True
    num_thread: int = 0  # 0: let the runtime decide


@dataclass(frozen=True)
class Options:
    """Everything one request asks of the model: runner options plus sampling and stop conditions."""

    runner: RunnerOptions
    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    temperature: float = 0.8
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = field(default_factory=tuple)


_RUNNER_FIELDS = {f.name: f for f in dataclasses.fields(RunnerOptions)}
_OPTION_FIELDS = {f.name: f for f in dataclasses.fields(Options) if f.name != "runner"}


def build_options(default_num_ctx: int, *layers: Mapping[str, Any] | None) -> Options:
    """Merge option maps over ollama's defaults, later layers winning (params layer, then request).

    Raises RequestError(400) with ollama's message for a value of the wrong type.
    """
    runner: dict[str, Any] = {"num_ctx": default_num_ctx or DEFAULT_NUM_CTX}
    sampling: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise RequestError(400, "options must be an object")
        for key, value in layer.items():
            if value is None:
                continue
            if key in _RUNNER_FIELDS:
                runner[key] = _coerce(key, _RUNNER_FIELDS[key].type, value)
            elif key in _OPTION_FIELDS:
                sampling[key] = _coerce(key, _OPTION_FIELDS[key].type, value)
            else:
                log.warning("invalid option provided: %s", key)
    for key, value in (runner | sampling).items():
        _check_range(key, value)
    return Options(runner=RunnerOptions(**runner), **sampling)


def _check_range(key: str, value: Any) -> None:
    """Refuse a well-typed value llama.cpp would crash on or silently wrap (see the module doc)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(400, f'option "{key}" must be a finite number')
    if isinstance(value, int) and not isinstance(value, bool) and key not in _UNBOUNDED:
        low, high = _BOUNDS.get(key, _INT32)
        if not low <= value <= high:
            raise RequestError(400, f'option "{key}" must be between {low} and {high}')


def _coerce(key: str, kind: str, value: Any) -> Any:
    """Apply Go's decoding rules for one option (JSON numbers are float64; bools are not numbers)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int":
        if not is_number or not math.isfinite(value):
            raise RequestError(400, f'option "{key}" must be of type integer')
        return int(value)
    if kind == "float":
        if not is_number:
            raise RequestError(400, f'option "{key}" must be of type float32')
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise RequestError(400, f'option "{key}" must be of type boolean')
        return value
    # the only remaining kind is the list of stop strings
    if not isinstance(value, list | tuple):
        raise RequestError(400, f'option "{key}" must be of type array')
    if not all(isinstance(item, str) for item in value):
        raise RequestError(400, f'option "{key}" must be of an array of strings')
    return tuple(value)


def parse_keep_alive(value: Any) -> float | None:
    """`keep_alive` as api.Duration decodes it: seconds, FOREVER for negatives, None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        kind = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}.get(type(value), "")
        raise RequestError(400, f"Unsupported type: '{kind}'")
    if isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as exc:
            raise RequestError(400, str(exc)) from None
    else:
        seconds = float(value)
    return FOREVER if seconds < 0 else seconds


def keep_alive_setting(seconds: float) -> float:
    """RunnerConfig.keep_alive uses a negative number for "forever"; map it to FOREVER."""
    return FOREVER if seconds < 0 else seconds
