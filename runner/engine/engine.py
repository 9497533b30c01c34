"""One loaded model on llama.cpp: several sequences decoded together in one batch per step.

The model file is mmapped in place (no copy) and one llama_context holds `num_parallel`
sequences of `num_ctx` cells each. A single worker thread owns every llama.cpp call on that
context: each step it puts one token of every generating sequence and a chunk of any pending
prompt into ONE llama_batch (one seq_id per sequence), decodes it, and samples each sequence
from its own logits. Tokens go back to the event loop through an `Outbox` (runner/outbox.py says
why not `call_soon_threadsafe`), so the loop never blocks on llama.cpp. A request whose consumer
goes away is marked cancelled and its sequence is dropped at the next step, freeing the slot.

Each sequence keeps the tokens it has in the KV cache after it finishes; the next request is
given the free slot sharing the longest prefix with its prompt and only the rest is evaluated
(llama-server's prompt cache, which makes multi-turn chat cheap).

A model with a projector also takes images (runner/engine/media.py): a prompt's image slots are
expanded into image positions before it is queued, and each image is decoded into its sequence
by mtmd between two steps. The cache keeps an image only for the same image at the same place,
and a sequence holding an image does not shift its context (llama-server's rule): it stops.

The server runs each Engine in a runner child (runner/engine/child.py) and holds an
`EngineProcess` (runner/engine/process.py) with the same interface in its place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np

from runner.engine import loading
from runner.engine.fit import check_image_prompt
from runner.engine.loading import EngineSettings
from runner.engine.logprobs import token_logprobs
from runner.engine.media import ImagePosition, ImagePrompt, Input, Media
from runner.engine.native import Vocab, init_backend, take_error
from runner.engine.outbox import Outbox, outbox_for
from runner.engine.sampling import SamplerChain, build_sampler
from runner.engine.textstream import TextStream
from runner.errors import RequestError
from runner.options import Options
from runner.spec import ModelSpec

log = logging.getLogger(__name__)

_OPEN_ENDED_CONTEXTS = 10  # ollama bounds num_predict (-1, or anything larger) to 10 × num_ctx


@dataclass(frozen=True)
class Completion:
    """One generation: prompt tokens plus how to sample and when to stop."""

    tokens: tuple[int, ...]  # with a slot (media.image_slot) where each image goes
    options: Options
    grammar: str | None = None
    preserved: frozenset[int] = frozenset()  # special tokens whose text is part of the output
    shift: bool = True  # on a full context, drop old tokens (after num_keep) instead of stopping
    logprobs: int | None = None  # None: none; n: each token's logprob plus its n best alternatives
    images: tuple[bytes, ...] = ()  # encoded images (PNG, JPEG…), indexed by their slots in `tokens`


@dataclass(frozen=True)
class Piece:
    text: str
    logprobs: tuple[dict[str, Any], ...] = ()  # one entry per token behind this text, when asked


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" | "length"
    prompt_eval_count: int
    prompt_eval_duration: int  # nanoseconds
    eval_count: int
    eval_duration: int  # nanoseconds
    stop: str = ""  # the stop string that ended the generation; "" for the end-of-generation token or a limit


@dataclass(frozen=True)
class Failure:
    """The generation failed (llama.cpp's error, or the model was unloaded); always the last event."""

    message: str


Event = Piece | Finished


@dataclass
class _Job:
    request: Completion
    emit: Callable[[Event | Failure], None]
    inputs: tuple[Input, ...]  # the prompt position by position: tokens, or images expanded
    prompt_cells: int  # what the prompt fills of the context (an image counts its embeddings)
    images: ImagePrompt | None = None
    cancelled: bool = False
    slot: _Slot | None = None
    pending: list[Input] = field(default_factory=list)
    sampler: SamplerChain | None = None
    stream: TextStream | None = None
    last_token: int = -1
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # of tokens whose text is held back
    generated: int = 0
    started: float = 0.0
    prompt_done: float = 0.0


@dataclass
class _Slot:
    seq_id: int
    cached: list[Input] = field(default_factory=list)  # positions whose K/V this sequence holds
    extra_cells: int = 0  # cells its images take beyond their positions (M-RoPE)
    job: _Job | None = None


def _common_prefix(a: list[Input], b: tuple[Input, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _text_run(pending: list[Input], limit: int) -> int:
    """How many of the first `limit` pending inputs are tokens, up to the next image."""
    for i, item in enumerate(pending[:limit]):
        if isinstance(item, ImagePosition):
            return i
    return min(limit, len(pending))


class Engine:
    """A model and its context; construct in a worker thread (loading blocks), close() when done."""

    def __init__(self, spec: ModelSpec, settings: EngineSettings) -> None:
        init_backend()
        self.spec = spec
        self.settings = settings
        self._model = loading.load_model(spec, settings)
        self._adapters: list[Any] = []
        self._media: Media | None = None
        try:
            self.vocab = Vocab(self._model)
            self.n_ctx_train = int(L.llama_model_n_ctx_train(self._model))
            self.n_embd = int(L.llama_model_n_embd(self._model))
            self._ctx = loading.new_context(self._model, loading.context_params(settings), spec.name)
            loading.load_adapters(self._model, self._ctx, spec, self._adapters)
        except BaseException:
            self._free()
            raise
        self.num_ctx = int(L.llama_n_ctx_seq(self._ctx))
        self._n_batch = int(L.llama_n_batch(self._ctx))
        self._memory = L.llama_get_memory(self._ctx)
        self._can_shift = bool(L.llama_memory_can_shift(self._memory))
        self._batch = L.llama_batch_init(self._n_batch, 0, 1)
        self._embed_ctx: Any = None
        self._slots = [_Slot(i) for i in range(settings.num_parallel)]
        self._waiting: list[_Job] = []
        self._active: list[_Job] = []
        self._incoming: list[_Job] = []
        self._tasks: list[Callable[[], None]] = []
        self._unflushed: set[Outbox] = set()
        self._closing = False
        self._wakeup = threading.Condition()
        self._permits = asyncio.Semaphore(settings.num_parallel)
        self.waiting_requests = 0
        self.steps = 0  # batched decode calls made, for diagnostics: one step serves every sequence
        self._thread = threading.Thread(target=self._run, name=f"engine:{spec.name}", daemon=True)
        self._thread.start()
        try:
            if spec.projector is not None:  # mtmd warms its encoder up as it loads: a computation
                self._run_on_worker(functools.partial(self._load_media, spec.projector))
            if f"{spec.architecture}.pooling_type" not in spec.gguf:  # embedding models never decode here
                self._run_on_worker(self._warm_up)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- loading

    def _load_media(self, projector: Path) -> None:
        self._media = Media(projector, self._model, self.settings)

    def _warm_up(self) -> None:
        """One throw-away decode, as llama-server does at start: the first decode of a context
        allocates and faults in weights, which belongs to the load time, not the first request.
        It runs on the worker thread like every other decode (see `_run_on_worker`)."""
        _put(self._batch, 0, max(self.vocab.bos, 0), 0, 0, True)
        self._batch.n_tokens = 1
        L.llama_decode(self._ctx, self._batch)
        L.llama_memory_clear(self._memory, True)

    # ----------------------------------------------------------------- public API

    @property
    def busy(self) -> bool:
        return bool(self._active or self._waiting or self._incoming)

    async def complete(self, request: Completion) -> AsyncIterator[Event]:
        """Generate for one request; waits for a free sequence slot first (OLLAMA_NUM_PARALLEL).

        Raises RequestError when llama.cpp fails mid-way. Closing the iterator early cancels
        the generation and frees the slot.
        """
        await self._acquire_permit()
        try:
            images = await asyncio.to_thread(self.prepare, request) if request.images else None
            outbox = outbox_for(asyncio.get_running_loop())
            queue: asyncio.Queue[Event | Failure] = asyncio.Queue()
            cancel = self.start(request, lambda event: self._post(outbox, queue.put_nowait, event), images)
            try:
                while True:
                    event = await queue.get()
                    if isinstance(event, Failure):
                        raise RequestError(500, event.message)
                    yield event
                    if isinstance(event, Finished):
                        return
            finally:
                cancel()
        finally:
            self._permits.release()

    def prepare(self, request: Completion) -> ImagePrompt | None:
        """A request's images read and tokenized, checked against the context (400s for an image
        that is none, or a prompt that does not fit: runner/engine/fit.py); None without images.
        Blocking: call it from a thread of its own. `start` takes the result and frees it."""
        if not request.images:
            return None
        if self._media is None:
            raise RequestError(400, f"{self.spec.name} does not support vision")
        prompt = self._media.expand(request.tokens, request.images)
        try:
            check_image_prompt(prompt, self.num_ctx)
        except RequestError:
            prompt.free()
            raise
        return prompt

    def start(
        self, request: Completion, emit: Callable[[Event | Failure], None], images: ImagePrompt | None = None
    ) -> Callable[[], None]:
        """Queue a generation whose events `emit` gets on the worker thread, ending with Finished or
        Failure; returns what cancels it. No slot permit: the caller bounds how many run at once.
        The runner child uses this to write each token to its socket from the worker itself.
        `images`: what `prepare` made of the request, which a request with images needs."""
        assert images is not None or not request.images
        if images is None:
            job = _Job(request, emit, inputs=request.tokens, prompt_cells=len(request.tokens))
        else:
            job = _Job(request, emit, inputs=images.inputs, prompt_cells=images.cells, images=images)
        self._submit(job=job)

        def cancel() -> None:
            job.cancelled = True
            self._notify()

        return cancel

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """Pooled embeddings of already-tokenized inputs (each fits num_ctx), one per input."""
        await self._acquire_permit()
        try:
            return await self._call(lambda: [self._embed_one(tokens) for tokens in inputs])
        finally:
            self._permits.release()

    def close(self) -> None:
        """Stop the worker (failing anything still running) and free llama.cpp memory. Blocking."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join()
        self._free()

    # ----------------------------------------------------------------- event-loop side helpers

    async def _acquire_permit(self) -> None:
        self.waiting_requests += 1
        try:
            await self._permits.acquire()
        finally:
            self.waiting_requests -= 1

    def _submit(self, job: _Job | None = None, task: Callable[[], None] | None = None) -> None:
        with self._wakeup:
            if self._closing:
                raise RequestError(500, "model was unloaded")
            if job is not None:
                self._incoming.append(job)
            if task is not None:
                self._tasks.append(task)
            self._wakeup.notify()

    def _run_on_worker(self, fn: Callable[[], None]) -> None:
        """Run fn on the worker thread and block the calling thread until it is done.

        ggml computes with OpenMP, whose thread team belongs to the thread that calls llama_decode
        and outlives the call; a single decode from any other thread (the loader's, say) leaves a
        second team whose idle workers compete with the real one. On 2 cores that halved decode
        speed (145 -> 74 tokens/s), so every compute call on this model goes through the worker.
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def task() -> None:
            try:
                fn()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        self._submit(task=task)
        done.result()

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the worker thread between two decode steps and await its result."""
        loop = asyncio.get_running_loop()
        outbox = outbox_for(loop)
        future: asyncio.Future[Any] = loop.create_future()

        def task() -> None:
            try:
                result = fn()
            except Exception as exc:
                self._post(outbox, _settle, future, None, exc)
            else:
                self._post(outbox, _settle, future, result, None)

        self._submit(task=task)
        return await future

    # ----------------------------------------------------------------- worker thread

    def _post(self, outbox: Outbox, fn: Callable[..., Any], *args: Any) -> None:
        outbox.put(fn, *args)
        self._unflushed.add(outbox)

    def _flush(self) -> None:
        """Wake the loops that have results waiting. Called at the top of each worker iteration,
        just before the next decode or wait, so the loop's work overlaps llama.cpp's."""
        for outbox in self._unflushed:
            outbox.flush()
        self._unflushed.clear()

    def _run(self) -> None:
        while True:
            self._flush()
            with self._wakeup:
                while not (self._closing or self._incoming or self._tasks or self._active or self._waiting):
                    self._wakeup.wait()
                if self._closing:
                    break
                self._waiting.extend(self._incoming)
                self._incoming.clear()
                tasks, self._tasks = self._tasks, []
            for task in tasks:
                task()
            try:
                self._drop_cancelled()
                self._assign_slots()
                if self._active:
                    self._step()
            except Exception as exc:
                log.exception("decode loop failed")
                self._fail_all(f"model runner failed: {exc}")
        self._fail_all("model was unloaded")
        for task in self._tasks:  # queued before close(): they settle their futures
            task()
        self._flush()

    def _drop_cancelled(self) -> None:
        for job in [j for j in (*self._active, *self._waiting) if j.cancelled]:
            self._release(job)
        self._waiting = [j for j in self._waiting if not j.cancelled]

    def _assign_slots(self) -> None:
        while self._waiting:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            job = self._waiting.pop(0)
            slot = max(free, key=lambda s: _common_prefix(s.cached, job.inputs))
            try:
                self._start(job, slot)
            except Exception as exc:
                self._release(job)
                job.emit(Failure(str(exc)))

    def _start(self, job: _Job, slot: _Slot) -> None:
        inputs = job.inputs
        keep = min(_common_prefix(slot.cached, inputs), len(inputs) - 1)
        if keep > 0 and isinstance(inputs[keep], ImagePosition):  # an image is kept whole or decoded again
            keep -= inputs[keep].offset
        if not L.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1):
            L.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            keep = 0
        del slot.cached[keep:]
        slot.extra_cells = sum(item.extra_cells for item in slot.cached if isinstance(item, ImagePosition))
        slot.job, job.slot = job, slot
        self._active.append(job)
        job.pending = list(inputs[keep:])
        options = job.request.options
        job.sampler = build_sampler(self.vocab, options, self.num_ctx, job.request.grammar)
        history = self.num_ctx if options.repeat_last_n < 0 else options.repeat_last_n
        if history > 0:
            job.sampler.feed_history([item for item in inputs[-history:] if isinstance(item, int)])
        job.stream = TextStream(options.stop)
        job.started = time.perf_counter()

    def _step(self) -> None:
        self._feed_images()
        batch = self._batch
        batch.n_tokens = 0
        outputs: list[tuple[_Job, int]] = []
        for job in list(self._active):
            if not job.pending and self._make_room(job):
                outputs.append((job, self._add(job, job.last_token, True)))
        budget = self._n_batch - batch.n_tokens
        for job in self._active:
            if not job.pending or budget <= 0:
                continue
            run = budget if job.images is None else _text_run(job.pending, budget)
            chunk, job.pending = job.pending[:run], job.pending[run:]
            budget -= len(chunk)
            for i, token in enumerate(chunk):
                index = self._add(job, token, not job.pending and i == len(chunk) - 1)
            if not job.pending:
                outputs.append((job, index))
        if batch.n_tokens == 0:
            return
        status = L.llama_decode(self._ctx, batch)
        self.steps += 1
        if status != 0:
            self._decode_failed(status)
            return
        now = time.perf_counter()
        for job, index in outputs:
            if not job.prompt_done:
                job.prompt_done = now
            self._sample(job, index)

    def _feed_images(self) -> None:
        """Decode the images now at the head of any sequence's pending prompt, each in mtmd calls
        of its own: encode the image, then decode its embeddings into that sequence alone."""
        for job in [j for j in self._active if j.images is not None]:
            while job.pending and isinstance(job.pending[0], ImagePosition) and self._feed_image(job):
                pass

    def _feed_image(self, job: _Job) -> bool:
        """One image chunk into the job's sequence; False (and the job failed) if mtmd could not."""
        slot, images, head = job.slot, job.images, job.pending[0]
        assert slot is not None and images is not None and self._media is not None
        assert isinstance(head, ImagePosition) and head.offset == 0
        n_past = len(slot.cached)
        try:
            positions = self._media.evaluate(images.chunks[head.key], self._ctx, n_past, slot.seq_id,
                                             self._n_batch) - n_past
        except RuntimeError as exc:
            self._forget(slot)
            self._release(job)
            job.emit(Failure(str(exc)))
            return False
        slot.cached.extend(job.pending[:positions])
        slot.extra_cells += head.extra_cells
        del job.pending[:positions]
        return True

    def _add(self, job: _Job, token: int, logits: bool) -> int:
        batch, slot = self._batch, job.slot
        assert slot is not None
        i = batch.n_tokens
        _put(batch, i, token, len(slot.cached), slot.seq_id, logits)
        batch.n_tokens = i + 1
        slot.cached.append(token)
        return i

    def _make_room(self, job: _Job) -> bool:
        """Ensure the sequence has a free cell: shift the context (llama-server style) or finish."""
        slot = job.slot
        assert slot is not None
        n_past = len(slot.cached)
        if n_past + slot.extra_cells < self.num_ctx:
            return True
        options = job.request.options
        n_keep = min(options.num_keep + int(self.vocab.add_bos), n_past - 1)
        if not (job.request.shift and self._can_shift and options.num_keep >= 0 and job.images is None):
            self._finish(job, "length")
            return False
        n_discard = (n_past - n_keep) // 2
        L.llama_memory_seq_rm(self._memory, slot.seq_id, n_keep, n_keep + n_discard)
        L.llama_memory_seq_add(self._memory, slot.seq_id, n_keep + n_discard, n_past, -n_discard)
        del slot.cached[n_keep : n_keep + n_discard]
        return True

    def _sample(self, job: _Job, index: int) -> None:
        assert job.sampler is not None and job.stream is not None
        token = job.sampler.sample(self._ctx, index)
        job.generated += 1
        if self.vocab.is_eog(token):
            self._finish(job, "stop")
            return
        if job.request.logprobs is not None:
            logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, index), shape=(self.vocab.n_tokens,))
            job.logprobs.append(token_logprobs(logits, token, job.request.logprobs, self._token_text))
        text = job.stream.feed(self.vocab.piece(token, special=token in job.request.preserved))
        if text:
            self._emit_text(job, text)
        if job.stream.stopped:
            self._finish(job, "stop")
            return
        limit = job.request.options.num_predict
        if limit <= 0 or limit > _OPEN_ENDED_CONTEXTS * self.num_ctx:  # as ollama's llm/server.go caps it
            limit = _OPEN_ENDED_CONTEXTS * self.num_ctx
        if job.generated >= limit:
            self._finish(job, "length")
            return
        job.last_token = token

    def _emit_text(self, job: _Job, text: str) -> None:
        job.emit(Piece(text, tuple(job.logprobs)))
        job.logprobs.clear()

    def _token_text(self, token: int) -> str:
        return self.vocab.piece(token, special=True).decode("utf-8", errors="replace")

    def _finish(self, job: _Job, reason: str) -> None:
        assert job.stream is not None and job.slot is not None
        tail = job.stream.flush()
        if tail:
            self._emit_text(job, tail)
        now = time.perf_counter()
        prompt_done = job.prompt_done or now
        self._release(job)  # before the last event, so whoever sees it finds the slot free
        job.emit(
            Finished(
                reason=reason,
                prompt_eval_count=job.prompt_cells,
                prompt_eval_duration=int((prompt_done - job.started) * 1e9),
                eval_count=job.generated,
                eval_duration=int((now - prompt_done) * 1e9),
                stop=job.stream.matched,
            )
        )

    def _release(self, job: _Job) -> None:
        if job in self._active:
            self._active.remove(job)
        if job.sampler is not None:
            job.sampler.free()
            job.sampler = None
        if job.slot is not None:
            job.slot.job = None
            job.slot = None
        if job.images is not None:
            job.images.free()

    def _forget(self, slot: _Slot) -> None:
        """Empty a sequence whose cache is no longer known to hold what `cached` says."""
        L.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.cached.clear()
        slot.extra_cells = 0

    def _decode_failed(self, status: int) -> None:
        """A failed decode leaves the cache undefined: forget every active sequence's cached tokens."""
        message = take_error() or f"llama_decode failed with status {status}"
        for job in list(self._active):
            assert job.slot is not None
            self._forget(job.slot)
            self._release(job)
            job.emit(Failure(message))

    def _fail_all(self, message: str) -> None:
        for job in [*self._active, *self._waiting, *self._incoming]:
            self._release(job)
            job.emit(Failure(message))
        self._waiting.clear()
        self._incoming.clear()
        for slot in self._slots:
            self._forget(slot)

    # ----------------------------------------------------------------- embeddings (worker thread)

    def _embed_one(self, tokens: list[int]) -> list[float]:
        ctx = self._embedding_context()
        memory = L.llama_get_memory(ctx)
        L.llama_memory_clear(memory, True)
        batch = L.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, token in enumerate(tokens):
                _put(batch, i, token, i, 0, True)
            batch.n_tokens = len(tokens)
            encoder_only = L.llama_model_has_encoder(self._model) and not L.llama_model_has_decoder(self._model)
            status = (L.llama_encode if encoder_only else L.llama_decode)(ctx, batch)
            if status != 0:
                raise RuntimeError(take_error() or f"embedding failed with status {status}")
            vector = L.llama_get_embeddings_seq(ctx, 0)
            if not vector:
                raise RuntimeError("the model produced no pooled embedding")
            return list(vector[: self.n_embd])
        finally:
            L.llama_batch_free(batch)

    def _embedding_context(self) -> Any:
        """A second context in embedding mode, created on first use: mean pooling unless the model says."""
        if self._embed_ctx is None:
            params = loading.context_params(self.settings)
            params.n_ctx = params.n_batch = params.n_ubatch = self.num_ctx
            params.n_seq_max = 1
            params.embeddings = True
            declared = f"{self.spec.architecture}.pooling_type" in self.spec.gguf
            params.pooling_type = L.LLAMA_POOLING_TYPE_UNSPECIFIED if declared else L.LLAMA_POOLING_TYPE_MEAN
            self._embed_ctx = loading.new_context(self._model, params, self.spec.name)
        return self._embed_ctx

    # ----------------------------------------------------------------- teardown

    def _free(self) -> None:
        if getattr(self, "_batch", None) is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        for name in ("_embed_ctx", "_ctx"):
            ctx = getattr(self, name, None)
            if ctx:
                L.llama_free(ctx)
            setattr(self, name, None)
        for adapter in self._adapters:
            L.llama_adapter_lora_free(adapter)
        self._adapters.clear()
        if self._media is not None:
            self._media.close()
            self._media = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None


def _put(batch: Any, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
    """Fill entry i of a llama_batch for one sequence."""
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq_id
    batch.logits[i] = logits


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
