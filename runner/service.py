"""Request → generation logic of ollama's /api/generate, /api/chat, /api/embed, independent of HTTP.

Public API (used by runner.api and by the OpenAI-compatible layer):

* ``RunnerService(config, resolve, scheduler)``
* ``async for chunk in service.generate(req)`` / ``service.chat(req)`` — `req` is the decoded JSON
  body of ollama's GenerateRequest / ChatRequest. Yields ollama-shaped chunk dicts exactly as
  they go on the wire (`created_at`, `response`/`message`, `done`, and on the last one
  `done_reason`, `context`, `total_duration`, `load_duration`, `prompt_eval_count`,
  `prompt_eval_duration`, `eval_count`, `eval_duration` in nanoseconds). Problems found before
  the first chunk (bad input, unknown model, queue full, load failure) raise ``RequestError``
  from the first ``__anext__``; later failures raise it mid-stream. Always iterate inside
  ``contextlib.aclosing`` (or close the generator): closing it early cancels the generation and
  frees the model's slot. Load/unload/`_debug_render_only` answers are single chunks;
  ``is_single_response(chunk)`` tells them apart (ollama sends those as plain JSON).
* ``collect_generate(chunks)`` / ``collect_chat(chunks)`` — fold a stream into the one object
  ollama returns for `"stream": false`.
* ``await service.embed(req)`` → /api/embed response; ``await service.embeddings(req)`` → legacy
  /api/embeddings; ``service.ps()`` → /api/ps.
* ``service.stats`` — counters for metrics (tokens_generated, prompt_tokens, queue_depth).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from runner.engine.engine import Completion, Finished, Piece
from runner.engine.loading import EngineSettings
from runner.engine.process import EngineProcess
from runner.engine.sampling import grammar_for_format
from runner.errors import RequestError
from runner.gotime import go_time, now_utc
from runner.options import Options, build_options, parse_keep_alive
from runner.prompt.builder import PromptBuilder, capabilities, think_enabled
from runner.prompt.images import Rendered, prompt_tokens
from runner.prompt.thinking import ThinkingParser
from runner.prompt.toolgrammar import tool_call_grammar
from runner.prompt.tools import new_tool_call_id
from runner.requests import (
    bool_field,
    check_token_ids,
    parse_context,
    parse_images,
    parse_messages,
    parse_think,
    parse_tools,
    string_field,
)
from runner.scheduler import LoadedModel, RunnerConfig, Scheduler
from runner.spec import ModelNotFoundError, ModelSpec, ModelUnusableError, SpecResolver
from runner.template.chat import ToolCall


class RunnerStats:
    """Counters the lead exports to Prometheus; plain ints, monotonic except queue_depth."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self.tokens_generated = 0
        self.prompt_tokens = 0

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a model load plus those waiting for a free sequence slot."""
        slots = sum(m.engine.waiting_requests for m in self._scheduler.loaded())
        return self._scheduler.pending + slots


_LAST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z, the largest date Python formats


def _lifecycle_chat_chunk(name: str, reason: str) -> dict[str, Any]:
    """The single chat answer to a request that only loads ("load") or unloads ("unload") a model."""
    message = {"role": "assistant", "content": ""}
    return {"model": name, "created_at": now_utc(), "message": message, "done": True, "done_reason": reason}


def is_single_response(chunk: Mapping[str, Any]) -> bool:
    """Answers ollama writes as one JSON document rather than an NDJSON stream."""
    return chunk.get("done_reason") in ("load", "unload") or "_debug_info" in chunk


def _require(req: Any) -> Mapping[str, Any]:
    if not isinstance(req, Mapping):
        raise RequestError(400, "missing request body")
    return req


@dataclass(frozen=True)
class _Plan:
    """What every inference request decides before touching a model."""

    options: Options
    settings: EngineSettings
    keep_alive: float | None
    grammar: str | None
    truncate: bool
    shift: bool
    logprobs: int | None  # top alternatives per token when `logprobs` is on, else None


class RunnerService:
    def __init__(self, config: RunnerConfig, resolve: SpecResolver, scheduler: Scheduler) -> None:
        self.config = config
        self._resolve = resolve
        self.scheduler = scheduler
        self.stats = RunnerStats(scheduler)
        self._prompts: weakref.WeakKeyDictionary[EngineProcess, dict[str, PromptBuilder]] = weakref.WeakKeyDictionary()
        self._renders: set[asyncio.Future[Rendered]] = set()  # awaited by requests; ended by `stop_renders`

    def stop_renders(self) -> None:
        """At shutdown: requests waiting for a template end now, whatever their render thread does."""
        for render in self._renders:
            if not render.done():
                render.set_exception(RequestError(503, "the server is shutting down"))

    async def _render(self, render: Callable[[], Rendered]) -> Rendered:
        """Run a prompt template off the event loop, in a daemon thread.

        A template may run up to its execution bounds (seconds of CPU), and Python cannot stop a
        thread. So shutdown does not wait for it: `stop_renders` ends the request awaiting it, and a
        daemon thread, unlike a pool thread, does not hold up the interpreter's exit.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Rendered] = loop.create_future()

        def settle(result: Rendered | None, exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(result)

        def run() -> None:
            try:
                result, exc = render(), None
            except BaseException as error:  # handed to the awaiting request, whatever it is
                result, exc = None, error
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody awaits it
                loop.call_soon_threadsafe(settle, result, exc)

        self._renders.add(done)
        done.add_done_callback(self._renders.discard)
        threading.Thread(target=run, name="corral template", daemon=True).start()
        return await done

    # ----------------------------------------------------------------- shared steps

    async def _spec(self, name: str, not_found: str | None = None) -> ModelSpec:
        if not name:
            raise RequestError(400, "model is required")
        try:
            return await self._resolve(name)
        except ModelNotFoundError:
            raise RequestError(404, not_found or f"model '{name}' not found") from None
        except ModelUnusableError as exc:
            raise RequestError(400, str(exc)) from None

    def _plan(self, spec: ModelSpec, req: Mapping[str, Any], embedding_only: bool = False) -> _Plan:
        options = build_options(self.config.context_length, spec.params, req.get("options"))
        return _Plan(
            options=options,
            settings=self.scheduler.engine_settings(spec, options.runner, embedding_only),
            keep_alive=parse_keep_alive(req.get("keep_alive")),
            grammar=grammar_for_format(req.get("format")),
            truncate=bool_field(req, "truncate") is not False,
            shift=bool_field(req, "shift") is not False,
            logprobs=(req.get("top_logprobs") or 0) if bool_field(req, "logprobs") else None,
        )

    def _prompt_builder(self, model: LoadedModel, spec: ModelSpec) -> PromptBuilder:
        """One builder per loaded engine and model (names sharing weights may differ in template);
        it keeps the parsed template and special-token texts."""
        builders = self._prompts.setdefault(model.engine, {})
        builder = builders.get(spec.digest)
        if builder is None:
            builder = builders[spec.digest] = PromptBuilder(spec, model.engine.vocab)
        return builder

    @staticmethod
    def _check_think(spec: ModelSpec, model_name: str, think: bool | str | None,
                     relax: bool = False) -> bool | str | None:
        """Thinking models think unless told otherwise; asking one without the capability is a 400,
        unless `relax` (ollama's Anthropic route: clients like Claude Code ask every model to think)."""
        if "thinking" in capabilities(spec):
            return True if think is None else think
        if think_enabled(think):
            if relax:
                return None
            raise RequestError(400, f'"{model_name}" does not support thinking')
        return think

    async def _generation(
        self, model: LoadedModel, prompt: Rendered, plan: _Plan, preserved: frozenset[int] = frozenset()
    ) -> AsyncIterator[Piece | Finished]:
        """Tokenize, fit to the context and run; yields the engine's pieces and its Finished. A
        prompt with images is fitted by the runner child, which alone knows what they take."""
        engine = model.engine
        tokens = await asyncio.to_thread(prompt_tokens, engine.vocab, prompt)
        if not prompt.images:
            tokens = engine.fit_prompt(tokens, plan.options, plan.truncate, plan.shift)
        completion = Completion(
            tokens=tuple(tokens),
            options=plan.options,
            grammar=plan.grammar,
            preserved=preserved,
            shift=plan.shift,
            logprobs=plan.logprobs,
            images=prompt.images,
        )
        async with contextlib.aclosing(engine.complete(completion)) as events:
            async for event in events:
                if isinstance(event, Finished):
                    self.stats.prompt_tokens += event.prompt_eval_count
                    self.stats.tokens_generated += event.eval_count
                yield event

    @staticmethod
    def _final_fields(event: Finished, started: float, loaded: float) -> dict[str, Any]:
        return {
            "done_reason": event.reason,
            "total_duration": int((time.perf_counter() - started) * 1e9),
            "load_duration": max(1, int((loaded - started) * 1e9)),
            "prompt_eval_count": event.prompt_eval_count,
            "prompt_eval_duration": max(1, event.prompt_eval_duration),
            "eval_count": event.eval_count,
            "eval_duration": max(1, event.eval_duration),
        }

    # ----------------------------------------------------------------- /api/generate

    async def generate(self, req: Any) -> AsyncIterator[dict[str, Any]]:
        started = time.perf_counter()
        req = _require(req)
        name = string_field(req, "model")
        _check_top_logprobs(req)
        prompt, suffix = string_field(req, "prompt"), string_field(req, "suffix")
        system, template = string_field(req, "system"), string_field(req, "template")
        raw = bool(bool_field(req, "raw"))
        context = parse_context(req.get("context"))
        images = parse_images(req.get("images"), "GenerateRequest.images")
        think = parse_think(req.get("think"))
        spec = await self._spec(name)
        check_token_ids(context or [], spec.vocab_size)
        plan = self._plan(spec, req)
        if not prompt and plan.keep_alive == 0:
            await self.scheduler.expire(spec)
            yield {"model": name, "created_at": now_utc(), "response": "", "done": True, "done_reason": "unload"}
            return
        if raw and (template or system or context):
            raise RequestError(400, "raw mode does not support template, system, or context")
        caps = capabilities(spec)
        if "completion" not in caps:
            raise RequestError(400, f'"{name}" does not support generate')
        if suffix and "insert" not in caps:
            raise RequestError(400, f"{spec.error_name} does not support insert")
        if images and "vision" not in caps:
            raise RequestError(400, f"{spec.error_name} does not support vision")
        think = self._check_think(spec, name, think)
        async with self.scheduler.use(spec, plan.settings, plan.keep_alive) as model:
            loaded = time.perf_counter()
            if not prompt:
                yield {"model": name, "created_at": now_utc(), "response": "", "done": True, "done_reason": "load"}
                return
            check_token_ids(context or [], model.engine.vocab.n_tokens)  # for specs that did not know
            builder = self._prompt_builder(model, spec)
            rendered = Rendered(prompt, images)  # raw: the client marks where its images go
            if not raw:
                rendered = await self._render(
                    functools.partial(
                        builder.generate,
                        prompt=prompt,
                        suffix=suffix,
                        system=system,
                        template=template,
                        context=context,
                        think=think,
                        num_ctx=model.engine.num_ctx,
                        truncate=plan.truncate,
                        images=images,
                    )
                )
            if req.get("_debug_render_only"):
                yield {
                    "model": name,
                    "created_at": now_utc(),
                    "response": "",
                    "done": False,
                    "_debug_info": _debug_info(rendered),
                }
                return
            thinking = builder.thinking_parser(rendered.text, think)
            output: list[str] = []
            async with contextlib.aclosing(self._generation(model, rendered, plan)) as events:
                async for event in events:
                    done = isinstance(event, Finished)
                    thought, text = _split_thinking(thinking, event)
                    chunk: dict[str, Any] = {"model": name, "created_at": now_utc(), "response": text}
                    if thought:
                        chunk["thinking"] = thought
                    chunk["done"] = done
                    if not done:
                        output.append(event.text)
                        if event.logprobs:
                            chunk["logprobs"] = list(event.logprobs)
                        if text or thought or event.logprobs:
                            yield chunk
                        continue
                    chunk.update(self._final_fields(event, started, loaded))
                    if not raw:
                        chunk["context"] = await asyncio.to_thread(
                            model.engine.vocab.tokenize, rendered.text + "".join(output), False
                        )
                    yield chunk

    # ----------------------------------------------------------------- /api/chat

    async def chat(
        self,
        req: Any,
        *,
        force_tools: list[str] | None = None,
        relax_think: bool = False,
        report_stop: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """/api/chat, plus what the translating layers need beyond ollama's chunks: `force_tools`
        (tool_choice) constrains the output to one call of one of them, `relax_think` ignores
        `think` on a model that cannot think instead of refusing, and `report_stop` adds
        `stop_sequence` (the stop string that ended the answer) to the last chunk."""
        started = time.perf_counter()
        req = _require(req)
        name = string_field(req, "model")
        _check_top_logprobs(req)
        messages = parse_messages(req.get("messages"))
        tools = parse_tools(req.get("tools"))
        think = parse_think(req.get("think"))
        spec = await self._spec(name)
        plan = self._plan(spec, req)
        if not messages and plan.keep_alive == 0:
            await self.scheduler.expire(spec)
            yield _lifecycle_chat_chunk(name, "unload")
            return
        caps = capabilities(spec)
        if "completion" not in caps:
            raise RequestError(400, f'"{name}" does not support chat')
        if tools and "tools" not in caps:
            raise RequestError(400, f"{spec.error_name} does not support tools")
        if any(m.get("images") for m in messages) and "vision" not in caps:
            raise RequestError(400, f"{spec.error_name} does not support vision")
        think = self._check_think(spec, name, think, relax_think)
        async with self.scheduler.use(spec, plan.settings, plan.keep_alive) as model:
            loaded = time.perf_counter()
            if not messages:
                yield _lifecycle_chat_chunk(name, "load")
                return
            history = [dict(m) for m in spec.messages] + messages
            if messages[0]["role"] != "system" and spec.system:
                history.insert(0, {"role": "system", "content": spec.system})
            builder = self._prompt_builder(model, spec)
            rendered = await self._render(
                functools.partial(
                    builder.chat, history, tools or None, think, num_ctx=model.engine.num_ctx, truncate=plan.truncate
                )
            )
            if req.get("_debug_render_only"):
                yield {
                    "model": name,
                    "created_at": now_utc(),
                    "message": {"role": "", "content": ""},
                    "done": False,
                    "_debug_info": _debug_info(rendered),
                }
                return
            thinking = builder.thinking_parser(rendered.text, think)
            calls = builder.tool_parser(tools) if tools else None
            preserved = builder.preserved_tokens(calls)
            if force_tools and calls is not None:
                plan = replace(plan, grammar=tool_call_grammar(calls.tag, tools, force_tools))
            # ollama constrains a thinking model's answer only after it has thought: the first pass
            # runs free until content follows the thinking, the second renders that thinking as the
            # assistant's and generates the content under the format's grammar
            two_pass = thinking is not None and plan.grammar is not None and not force_tools and "thinking" in caps
            thoughts: list[str] = []

            def chunk_of(event: Piece | Finished, thought: str, text: str) -> dict[str, Any] | None:
                done = isinstance(event, Finished)
                message: dict[str, Any] = {"role": "assistant", "content": text}
                if thought:
                    message["thinking"] = thought
                if calls is not None:
                    message["content"], found = calls.add(text)
                    if done:
                        rest, more = calls.finish()
                        message["content"] += rest
                        found += more
                    if found:
                        message["tool_calls"] = [_tool_call_json(call) for call in found]
                chunk: dict[str, Any] = {"model": name, "created_at": now_utc(), "message": message, "done": done}
                if isinstance(event, Finished):
                    chunk.update(self._final_fields(event, started, loaded))
                    if report_stop and event.stop:
                        chunk["stop_sequence"] = event.stop
                elif event.logprobs:
                    chunk["logprobs"] = list(event.logprobs)
                elif not (message["content"] or thought or "tool_calls" in message):
                    return None
                return chunk

            free = replace(plan, grammar=None) if two_pass else plan
            async with contextlib.aclosing(self._generation(model, rendered, free, preserved)) as events:
                async for event in events:
                    thought, text = _split_thinking(thinking, event)
                    thoughts.append(thought)
                    if two_pass and text and "".join(thoughts):
                        message = {"role": "assistant", "content": ""}  # this content is dropped
                        if thought:
                            message["thinking"] = thought
                        yield {"model": name, "created_at": now_utc(), "message": message, "done": False}
                        break  # closing the generation cancels it
                    if (chunk := chunk_of(event, thought, text)) is not None:
                        yield chunk
                else:
                    return
            history.append({"role": "assistant", "content": "", "thinking": "".join(thoughts)})
            rendered = await self._render(
                functools.partial(
                    builder.chat, history, tools or None, think, num_ctx=model.engine.num_ctx, truncate=plan.truncate
                )
            )
            async with contextlib.aclosing(self._generation(model, rendered, plan, preserved)) as events:
                async for event in events:
                    thought, text = _split_thinking(thinking, event)  # past the thinking: all content
                    if (chunk := chunk_of(event, thought, text)) is not None:
                        yield chunk

    # ----------------------------------------------------------------- /api/embed, /api/embeddings

    async def embed(self, req: Any) -> dict[str, Any]:
        started = time.perf_counter()
        req = _require(req)
        name = string_field(req, "model")
        raw_input = req.get("input")
        if isinstance(raw_input, str):
            inputs = [raw_input] if raw_input else []
        elif isinstance(raw_input, list) and all(isinstance(i, str) for i in raw_input):
            inputs = list(raw_input)
        elif raw_input is None:
            inputs = []
        else:
            raise RequestError(400, "invalid input type")
        dimensions = req.get("dimensions") or 0
        if not isinstance(dimensions, int) or isinstance(dimensions, bool):
            raise RequestError(400, "json: cannot unmarshal dimensions into Go struct field of type int")
        spec = await self._spec(name)
        plan = self._plan(spec, req, embedding_only="completion" not in capabilities(spec))
        async with self.scheduler.use(spec, plan.settings, plan.keep_alive) as model:
            loaded = time.perf_counter()
            if not inputs:
                return {"model": name, "embeddings": []}
            token_lists = [
                await asyncio.to_thread(self._embedding_tokens, model, text, plan.truncate) for text in inputs
            ]
            vectors = await model.engine.embed(token_lists)
        embeddings = []
        for vector in vectors:
            unit = _normalize(vector)
            if 0 < dimensions < len(unit):
                unit = _normalize(unit[:dimensions])
            embeddings.append(unit)
        count = sum(len(t) for t in token_lists)
        self.stats.prompt_tokens += count
        return {
            "model": name,
            "embeddings": embeddings,
            "total_duration": int((time.perf_counter() - started) * 1e9),
            "load_duration": max(1, int((loaded - started) * 1e9)),
            "prompt_eval_count": count,
        }

    @staticmethod
    def _embedding_tokens(model: LoadedModel, text: str, truncate: bool) -> list[int]:
        """Tokens of one input, cut to the context unless truncate is false (then 400 if too long)."""
        engine = model.engine
        tokens = engine.vocab.tokenize(text)
        limit = min(engine.num_ctx, engine.n_ctx_train or engine.num_ctx)
        if len(tokens) <= limit:
            return tokens
        if not truncate:
            raise RequestError(400, "the input length exceeds the context length")
        return tokens[:limit]

    async def embeddings(self, req: Any) -> dict[str, Any]:
        req = _require(req)
        name = string_field(req, "model")
        prompt = string_field(req, "prompt")
        spec = await self._spec(name, not_found=f'model "{name}" not found, try pulling it first')
        plan = self._plan(spec, req, embedding_only="completion" not in capabilities(spec))
        async with self.scheduler.use(spec, plan.settings, plan.keep_alive) as model:
            if not prompt:
                return {"embedding": []}
            tokens = await asyncio.to_thread(self._embedding_tokens, model, prompt, True)
            (vector,) = await model.engine.embed([tokens])
        self.stats.prompt_tokens += len(tokens)
        return {"embedding": _normalize(vector)}

    # ----------------------------------------------------------------- /api/ps

    def ps(self) -> dict[str, Any]:
        models = []
        for model in sorted(self.scheduler.loaded(), key=lambda m: m.expires_at, reverse=True):
            spec = model.spec
            models.append(
                {
                    "name": spec.name,
                    "model": spec.name,
                    "size": model.size,
                    "digest": spec.digest,
                    "details": spec.details,
                    "expires_at": go_time(min(model.expires_at, _LAST_TIMESTAMP)),
                    "size_vram": model.size_vram,
                    "context_length": model.engine.num_ctx,
                }
            )
        return {"models": models}


def _split_thinking(parser: ThinkingParser | None, event: Piece | Finished) -> tuple[str, str]:
    """(thinking, content) of one engine event; the end of generation flushes what was held."""
    if parser is None:
        return "", event.text if isinstance(event, Piece) else ""
    return parser.add(event.text) if isinstance(event, Piece) else parser.finish()


def _debug_info(rendered: Rendered) -> dict[str, Any]:
    """api.DebugInfo: the prompt as rendered, and how many images go with it (omitted when none)."""
    info: dict[str, Any] = {"rendered_template": rendered.text}
    if rendered.images:
        info["image_count"] = len(rendered.images)
    return info


def _tool_call_json(call: ToolCall) -> dict[str, Any]:
    """api.ToolCall as ollama sends it, with a fresh `call_xxxxxxxx` id."""
    return {
        "id": new_tool_call_id(),
        "function": {"index": call.index, "name": call.name, "arguments": call.arguments},
    }


def _check_top_logprobs(req: Mapping[str, Any]) -> None:
    value = req.get("top_logprobs") or 0
    if not isinstance(value, int) or not 0 <= value <= 20:
        raise RequestError(400, "top_logprobs must be between 0 and 20")


def _normalize(vector: list[float]) -> list[float]:
    if any(math.isnan(v) or math.isinf(v) for v in vector):
        raise RequestError(500, "embedding contains NaN or Inf values")
    norm = 1.0 / max(math.sqrt(sum(v * v for v in vector)), 1e-12)
    return [v * norm for v in vector]


def collect_generate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The `stream: false` answer: the last chunk with all response/thinking text concatenated."""
    result = dict(chunks[-1])
    result["response"] = "".join(c.get("response", "") for c in chunks)
    thinking = "".join(c.get("thinking", "") for c in chunks)
    if thinking:
        result["thinking"] = thinking
    return _with_logprobs(result, chunks)


def collect_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The `stream: false` answer: last chunk, message content/thinking joined, tool calls gathered."""
    result = dict(chunks[-1])
    message = dict(result.get("message", {}))
    message["content"] = "".join(c["message"].get("content", "") for c in chunks)
    thinking = "".join(c["message"].get("thinking", "") for c in chunks)
    if thinking:
        message["thinking"] = thinking
    calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
    if calls:
        message["tool_calls"] = calls
    result["message"] = message
    return _with_logprobs(result, chunks)


def _with_logprobs(result: dict[str, Any], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Every chunk's logprobs, in order, on the folded answer (as ollama's non-streamed reply)."""
    logprobs = [entry for chunk in chunks for entry in chunk.get("logprobs", ())]
    if logprobs:
        result["logprobs"] = logprobs
    return result

