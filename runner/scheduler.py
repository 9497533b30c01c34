"""Which models are loaded, for how long, and who waits for what — ollama's server/sched.go rules.

* A request on a loaded model whose runner options are unchanged uses it directly and then
  waits for one of its `num_parallel` sequence slots (counted by its EngineProcess), without queueing.
* A request that needs a load (or a reload because num_ctx/num_batch/num_gpu/num_thread/... changed)
  joins the pending queue; with `max_queue` requests already pending it is refused with 503.
  Loads run one at a time and concurrent requests for the same load share it.
* Making room: at `max_loaded_models` the idle model with the shortest keep-alive (then path) is
  unloaded; when none is idle, that one is marked to expire and the load waits for it to drain.
* keep_alive: the idle timer starts when the last request on a model ends; a request that sets
  keep_alive overwrites the model's duration, one that does not keeps it; <= 0 unloads at once,
  FOREVER never does.
* Each loaded model is a runner child process (runner/engine/process.py). A child that dies is
  forgotten at once (its requests fail with ollama's "llama runner process has terminated"), so
  /api/ps lists only what runs and the next request loads the model again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path

from runner.engine.loading import EngineSettings
from runner.engine.memory import footprint, offload_layers, place
from runner.engine.native import gpu_offload_supported
from runner.engine.process import EngineProcess
from runner.errors import QUEUE_FULL_MESSAGE, RequestError
from runner.options import FOREVER, RunnerOptions, keep_alive_setting
from runner.spec import ModelSpec

log = logging.getLogger(__name__)

_DEFAULT_MODELS_PER_GPU = 3  # ollama's OLLAMA_MAX_LOADED_MODELS=0 means 3 per GPU (3 on CPU)
_FOREVER_SECONDS = (2**63 - 1) / 1e9  # what Go's MaxInt64 duration adds to expires_at
_MULTIMODAL_MIN_CTX = 2048  # ollama's sched.go: a model with a projector gets at least this


@dataclass(frozen=True)
class RunnerConfig:
    """Runner settings (OLLAMA_* variables), built by the registry's Settings and passed in."""

    keep_alive: float = 300.0  # seconds; negative = forever
    max_loaded_models: int = 0  # 0 = automatic (3)
    num_parallel: int = 1
    max_queue: int = 512
    context_length: int = 0  # 0 = automatic (4096)
    flash_attention: bool | None = None
    llm_library: str = ""  # "cpu" forces CPU
    max_vram: int = 0  # bytes per GPU; 0 = no cap
    load_timeout: float = 300.0  # seconds; <= 0 = no limit
    gpu_devices: tuple[str, ...] = ()  # GPUs to place children on (CUDA ids); () = each child sees all


@dataclass(eq=False)
class LoadedModel:
    """A resident model and its bookkeeping; `refs` counts requests holding it."""

    spec: ModelSpec
    engine: EngineProcess
    settings: EngineSettings
    keep_alive: float
    size: int
    size_vram: int
    devices: tuple[str, ...] = ()  # the GPUs its child was given; () = whatever the server sees
    refs: int = 0
    expiring: bool = False  # marked for unload: no new request may use it
    expires_at: float = field(default_factory=time.time)  # wall-clock seconds
    timer: asyncio.TimerHandle | None = None


def model_key(spec: ModelSpec) -> tuple[Path, tuple[Path, ...], Path | None]:
    """Two names for the same weights and adapters share one loaded model, as in ollama."""
    return spec.model_path, spec.adapters, spec.projector


class Scheduler:
    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.default_keep_alive = keep_alive_setting(config.keep_alive)
        self.max_loaded = config.max_loaded_models or _DEFAULT_MODELS_PER_GPU
        self._gpu = config.llm_library.lower() != "cpu" and gpu_offload_supported()
        self._loaded: dict[tuple, LoadedModel] = {}
        self._loads: dict[tuple, asyncio.Task[LoadedModel]] = {}
        self._load_lock = asyncio.Lock()
        self._waiters: set[asyncio.Future[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.pending = 0

    # ----------------------------------------------------------------- requests

    def engine_settings(self, spec: ModelSpec, options: RunnerOptions, embedding_only: bool) -> EngineSettings:
        """What a load with these options looks like; equal settings mean no reload is needed."""
        num_ctx = options.num_ctx if options.num_ctx > 0 else (self.config.context_length or 4096)
        if spec.projector is not None:  # an image alone can take hundreds of cells
            num_ctx = max(num_ctx, _MULTIMODAL_MIN_CTX)
        trained = int(spec.gguf.get(f"{spec.architecture}.context_length", 0) or 0)
        if trained and num_ctx > trained:
            log.warning("requested context size too large for model: num_ctx=%d n_ctx_train=%d", num_ctx, trained)
            num_ctx = trained
        parallel = 1 if embedding_only else max(1, self.config.num_parallel)
        return EngineSettings(
            num_ctx=num_ctx,
            num_parallel=parallel,
            num_batch=options.num_batch if options.num_batch > 0 else 512,
            num_threads=max(0, options.num_thread),
            gpu_layers=offload_layers(spec, options.num_gpu, num_ctx * parallel, self._gpu, self.config.max_vram),
            main_gpu=options.main_gpu,
            flash_attention=self.config.flash_attention,
            use_mmap=options.use_mmap,
        )

    @contextlib.asynccontextmanager
    async def use(
        self, spec: ModelSpec, settings: EngineSettings, keep_alive: float | None
    ) -> AsyncIterator[LoadedModel]:
        """Hold a loaded model for one request (loading it first if needed); release on exit."""
        model = await self.acquire(spec, settings, keep_alive)
        try:
            yield model
        finally:
            self.release(model)

    async def acquire(self, spec: ModelSpec, settings: EngineSettings, keep_alive: float | None) -> LoadedModel:
        key = model_key(spec)
        while True:
            model = self._loaded.get(key)
            if model is not None and not model.expiring and model.settings == settings:
                self._hold(model, keep_alive)
                return model
            if self.pending >= max(1, self.config.max_queue):
                raise RequestError(503, QUEUE_FULL_MESSAGE)
            task = self._loads.get((key, settings))
            if task is None:
                task = asyncio.create_task(self._load(spec, settings, keep_alive))
                self._loads[(key, settings)] = task
                task.add_done_callback(lambda _t, k=(key, settings): self._loads.pop(k, None))
            self.pending += 1
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                task.add_done_callback(self._arm_if_unused)
                raise
            finally:
                self.pending -= 1

    def release(self, model: LoadedModel) -> None:
        model.refs -= 1
        if model.refs == 0:
            self._arm(model)

    async def expire(self, spec: ModelSpec) -> None:
        """keep_alive 0 with nothing to do: unload now, or as soon as the model's requests finish."""
        model = self._loaded.get(model_key(spec))
        if model is None:
            return
        model.keep_alive = 0.0
        model.expiring = True
        if model.refs == 0:
            await self._unload(model)

    # ----------------------------------------------------------------- inspection

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    async def unload_name(self, name: str) -> bool:
        """Unload the model(s) known by this name now (waiting for running requests); True if any."""
        found = [m for m in self._loaded.values() if m.spec.name == name]
        for model in found:
            model.keep_alive = 0.0
            await self._retire(model)
        return bool(found)

    async def close(self) -> None:
        """Stop every runner child (shutdown): loads in progress are abandoned, running requests fail."""
        for task in [*self._loads.values(), *self._background]:
            task.cancel()
        await asyncio.gather(*(self._unload(model) for model in list(self._loaded.values())))

    # ----------------------------------------------------------------- internals

    def _hold(self, model: LoadedModel, keep_alive: float | None) -> None:
        model.refs += 1
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        if keep_alive is not None:
            model.keep_alive = keep_alive
        model.expires_at = _deadline(model.keep_alive)

    def _arm(self, model: LoadedModel) -> None:
        """Start the idle clock of a model nobody holds."""
        if model not in self._loaded.values():
            return
        model.expires_at = _deadline(model.keep_alive)
        if model.expiring or model.keep_alive <= 0:
            self._spawn(self._unload(model))
        elif model.keep_alive != FOREVER:
            model.timer = asyncio.get_running_loop().call_later(
                model.keep_alive, lambda: self._spawn(self._expire_idle(model))
            )

    def _arm_if_unused(self, task: asyncio.Task[LoadedModel]) -> None:
        """A load finished for requesters that all went away: let the model time out normally."""
        if task.cancelled() or task.exception() is not None:
            return
        model = task.result()
        if model.refs == 0 and model.timer is None:
            self._arm(model)

    async def _expire_idle(self, model: LoadedModel) -> None:
        if model.refs == 0:
            await self._unload(model)

    async def _load(self, spec: ModelSpec, settings: EngineSettings, keep_alive: float | None) -> LoadedModel:
        async with self._load_lock:
            key = model_key(spec)
            current = self._loaded.get(key)
            if current is not None and not current.expiring and current.settings == settings:
                return current
            if current is not None:
                log.info("reloading %s with new runner options", spec.name)
                await self._retire(current)
            while len(self._loaded) >= self.max_loaded:
                await self._evict_one()
            started = time.perf_counter()
            size, size_vram = footprint(spec, settings.num_ctx * settings.num_parallel, settings.gpu_layers)
            devices = self._placement(settings, size_vram)
            engine = await self._start_engine(spec, settings, devices)
            if engine.vram is not None:  # what the child measured on its GPUs beats the estimate
                size, size_vram = max(size, engine.vram), engine.vram
            model = LoadedModel(
                spec=spec,
                engine=engine,
                settings=settings,
                keep_alive=self.default_keep_alive if keep_alive is None else keep_alive,
                size=size,
                size_vram=size_vram,
                devices=devices,
            )
            self._loaded[key] = model
            engine.exited.add_done_callback(lambda _f: self._spawn(self._lost(model)))
            elapsed = time.perf_counter() - started
            log.info("loaded %s in %.2fs (%s, runner %d)", spec.name, elapsed, settings, engine.pid)
            return model

    def _placement(self, settings: EngineSettings, need: int) -> tuple[str, ...]:
        """The GPUs for a new child: none to choose without a device list or offloaded layers."""
        devices = self.config.gpu_devices
        if not devices or settings.gpu_layers == 0:
            return ()
        committed: dict[str, int] = {}
        for model in self._loaded.values():
            for device in model.devices:  # a model spread over several GPUs counts evenly on each
                committed[device] = committed.get(device, 0) + model.size_vram // len(model.devices)
        return place(devices, committed, need, settings.main_gpu, self.config.max_vram)

    async def _start_engine(
        self, spec: ModelSpec, settings: EngineSettings, devices: tuple[str, ...]
    ) -> EngineProcess:
        """Start the model's runner child; a load past load_timeout kills it (ollama's wording).
        A child given its GPUs numbers them from 0, so main_gpu (already used to choose) is 0 there."""
        timeout = self.config.load_timeout if self.config.load_timeout > 0 else None
        start = (
            EngineProcess.start(spec, dataclasses.replace(settings, main_gpu=0), devices)
            if devices
            else EngineProcess.start(spec, settings)
        )
        try:
            return await asyncio.wait_for(start, timeout)
        except TimeoutError:
            raise RequestError(500, "timed out waiting for llama runner to start") from None

    async def _lost(self, model: LoadedModel) -> None:
        """A child that ended on its own: forget its model so the next request loads it again."""
        key = model_key(model.spec)
        if self._loaded.get(key) is not model:
            return  # unloaded on purpose, or already replaced
        del self._loaded[key]
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        await model.engine.kill()
        log.warning("%s is no longer loaded: its runner ended (%s)", model.spec.name, model.engine.exited.result())
        self._notify()

    async def _retire(self, model: LoadedModel) -> None:
        """Unload a model as soon as its requests finish, and wait for that."""
        model.expiring = True
        if model.refs == 0:
            await self._unload(model)
        while model in self._loaded.values():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)

    async def _evict_one(self) -> None:
        candidates = sorted(self._loaded.values(), key=lambda m: (m.keep_alive, str(m.spec.model_path)))
        idle = next((m for m in candidates if m.refs == 0), None)
        if idle is not None:
            log.info("evicting %s to make room", idle.spec.name)
            await self._unload(idle)
            return
        victim = candidates[0]
        victim.keep_alive = 0.0
        await self._retire(victim)

    async def _unload(self, model: LoadedModel) -> None:
        key = model_key(model.spec)
        if self._loaded.get(key) is not model:
            return
        del self._loaded[key]
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        await model.engine.close()
        log.info("unloaded %s", model.spec.name)
        self._notify()

    def _notify(self) -> None:
        """Wake everything waiting for a model to go away."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _deadline(keep_alive: float) -> float:
    return time.time() + (_FOREVER_SECONDS if keep_alive == FOREVER else max(keep_alive, 0.0))
