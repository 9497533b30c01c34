"""The server's side of a runner child: an `Engine` look-alike whose model lives in another process.

Why a process: anything that goes wrong inside llama.cpp (an abort on a bad token, an out-of-memory
kill, a decode that never returns) then ends one child, not the server and every pull it serves.
The child (runner/engine/child.py) is `python -m runner.engine.child`, running the same code as
the server (its PYTHONPATH starts with this package's root) and mmapping the blob file itself.

Why socketpairs: one end of each is passed to the child with `pass_fds`, so there is no path in
the filesystem, no port, nothing anyone else can connect to, and it works alike on Linux and
macOS; the commands socket closing is the child's signal that the server is gone. Two, one per
direction, because the child writes its events blocking from the model's worker thread (no event
loop wake-up per token in the child) while reading commands on its event loop. Frames are
runner/engine/wire.py's.
Measured on the 2-core test machine, a token's frame (encode, write, read, parse, queue) costs
about 10 µs of CPU and 25-30 µs from write to queue, against ~9 ms for a SmolLM2 decode step.

The server keeps the model's vocabulary (`Vocab.from_file`, loaded while the child loads the
weights) so templates, tokenizing and truncation run here without round trips. NUM_PARALLEL's
sequence slots are counted here too, so `waiting_requests` is known without asking the child.

When the child dies, every request it was serving ends with ollama's "llama runner process has
terminated: <reason>" (the last error line it logged, else how it exited) and `exited` resolves
so the scheduler forgets the model. Its stdout and stderr go to the server's log, each line
under `runner.child` with the child's pid and model.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from runner.engine import wire
from runner.engine.engine import Completion, Event, Finished, Piece
from runner.engine.fit import fit_prompt
from runner.engine.loading import EngineSettings
from runner.engine.native import Vocab
from runner.errors import ModelLoadError, RequestError
from runner.options import Options
from runner.spec import ModelSpec

log = logging.getLogger(__name__)
child_log = logging.getLogger("runner.child")

TERMINATED = "llama runner process has terminated"
STOP_GRACE = 2.0  # seconds a child gets after its socket closes, then again after SIGTERM
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding `runner/`
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}
_ERROR_LINE = re.compile(r"error|what\(\)|exception|abort", re.IGNORECASE)


_Stream = asyncio.Queue[Event | RequestError | list[list[float]]]  # one request's events as the child sends them


class EngineProcess:
    """A runner child and the handle the scheduler and service use as they used an in-process Engine."""

    def __init__(self, spec: ModelSpec, settings: EngineSettings, process: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.settings = settings
        self.pid = process.pid
        self._process = process
        self._reader: asyncio.StreamReader | None = None  # events from the child
        self._writer: asyncio.StreamWriter | None = None  # commands to it
        self._unused: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None  # kept: GC would close them
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)
        self._permits = asyncio.Semaphore(settings.num_parallel)
        self._last_error = ""
        self._closing = False
        self._death: str | None = None  # why the child ended on its own, once it has
        self._relay = asyncio.create_task(self._relay_output())
        self._tasks: list[asyncio.Task[None]] = []
        self.vocab: Vocab
        self.num_ctx = settings.num_ctx
        self.n_ctx_train = 0
        self.n_embd = 0
        self.vram: int | None = None  # bytes the load took on GPUs, as the child measured; None: no GPU
        self.steps = 0  # batched decode steps the child made, as of its last finished request
        self.waiting_requests = 0
        self.exited: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # → why it ended

    # ----------------------------------------------------------------- start

    @classmethod
    async def start(
        cls, spec: ModelSpec, settings: EngineSettings, devices: tuple[str, ...] | None = None
    ) -> EngineProcess:
        """Start a child and load the model in it; raises RequestError (500) if it cannot.

        `devices`: the GPUs the child may see (CUDA_VISIBLE_DEVICES), None to leave them as they are.
        Cancelling the load (timeout, shutdown) kills the child.
        """
        commands, child_commands = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        events, child_events = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs = (child_commands.fileno(), child_events.fileno())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "runner.engine.child", *map(str, theirs), str(os.getpid()),
                logging.getLevelName(min(logging.getLogger("runner").getEffectiveLevel(), logging.INFO)),
                pass_fds=theirs, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
        except BaseException:
            commands.close()
            events.close()
            raise
        finally:
            child_commands.close()
            child_events.close()
        engine = cls(spec, settings, process)
        engine._tasks.append(engine._relay)
        try:
            await engine._load(commands, events)
        except BaseException:
            await engine.kill()
            raise
        engine._tasks.append(asyncio.create_task(engine._receive()))
        return engine

    async def _load(self, commands: socket.socket, events: socket.socket) -> None:
        self._reader, events_writer = await asyncio.open_unix_connection(sock=events)
        commands_reader, self._writer = await asyncio.open_unix_connection(sock=commands)
        self._unused = (commands_reader, events_writer)
        spec, settings = wire.spec_to_wire(self.spec), wire.settings_to_wire(self.settings)
        self._send({"op": "load", "spec": spec, "settings": settings})
        reading = asyncio.create_task(asyncio.to_thread(Vocab.from_file, self.spec.model_path))
        reading.add_done_callback(lambda t: t.cancelled() or t.exception())  # the child's answer says more
        try:
            answer = await wire.read_frame(self._reader)
        except (ConnectionError, wire.ProtocolError):
            answer = None
        if answer is None:
            raise RequestError(500, f"{TERMINATED}: {await self._exit_reason()}")
        if answer.get("op") == "failed":
            raise RequestError(int(answer.get("status", 500)), str(answer.get("message", "model failed to load")))
        if answer.get("op") != "ready":
            raise ModelLoadError(f'unable to load model "{self.spec.name}": the runner answered {answer.get("op")!r}')
        try:
            self.vocab = await reading
        except ValueError as exc:
            raise ModelLoadError(f'unable to load model "{self.spec.name}": {exc}') from None
        self.num_ctx = int(answer["num_ctx"])
        self.n_ctx_train = int(answer["n_ctx_train"])
        self.n_embd = int(answer["n_embd"])
        vram = answer.get("vram")
        self.vram = int(vram) if vram is not None else None

    # ----------------------------------------------------------------- the Engine interface

    @property
    def busy(self) -> bool:
        return bool(self._streams) or self.waiting_requests > 0

    def fit_prompt(self, tokens: list[int], options: Options, truncate: bool, shift: bool) -> list[int]:
        return fit_prompt(tokens, options, truncate, shift, self.num_ctx, self.vocab.add_bos)

    async def complete(self, request: Completion) -> AsyncIterator[Event]:
        """Generate in the child; waits for one of NUM_PARALLEL slots first. Closing the iterator
        early cancels the generation there. Raises RequestError when the child fails or dies."""
        async with self._slot():
            request_id, stream = self._open({"op": "complete", "completion": wire.completion_to_wire(request)})
            try:
                while True:
                    event = await stream.get()
                    if isinstance(event, RequestError):
                        raise event
                    assert isinstance(event, Piece | Finished)
                    yield event
                    if isinstance(event, Finished):
                        return
            finally:
                if self._streams.pop(request_id, None) is not None:  # still running there: stop it
                    self._send({"op": "cancel", "id": request_id})

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """Pooled embeddings of already-tokenized inputs, computed in the child."""
        async with self._slot():
            request_id, stream = self._open({"op": "embed", "inputs": inputs})
            try:
                result = await stream.get()
            finally:
                self._streams.pop(request_id, None)
            if isinstance(result, RequestError):
                raise result
            assert isinstance(result, list)
            return result

    async def close(self) -> None:
        """Stop the child: close its socket (it frees the model and exits), then SIGTERM, then SIGKILL,
        STOP_GRACE seconds apart. Requests still running end with an error."""
        self._closing = True
        self._fail_all(RequestError(500, "model was unloaded"))
        if self._writer is not None:
            self._writer.close()
        for stop in (None, signal.SIGTERM):
            if stop is not None and self._process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._process.send_signal(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), STOP_GRACE)
                break
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL the child now and wait for it (shutdown, failed loads)."""
        self._closing = True
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        await self._process.wait()
        if self._writer is not None:
            self._writer.close()
        if self._unused is not None:
            self._unused[1].close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not asyncio.current_task()), return_exceptions=True)
        self._fail_all(RequestError(500, "model was unloaded"))
        if not self.exited.done():
            self.exited.set_result("stopped")

    # ----------------------------------------------------------------- internals

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        self.waiting_requests += 1
        try:
            await self._permits.acquire()
        finally:
            self.waiting_requests -= 1
        try:
            yield
        finally:
            self._permits.release()

    def _open(self, message: dict[str, Any]) -> tuple[int, _Stream]:
        if self._death is not None:  # a request that waited for a slot of a child now dead
            raise RequestError(500, f"{TERMINATED}: {self._death}")
        if self._closing:
            raise RequestError(500, "model was unloaded")
        request_id = next(self._ids)
        stream = self._streams[request_id] = _Stream()
        self._send({**message, "id": request_id})
        return request_id, stream

    def _send(self, message: dict[str, Any]) -> None:
        assert self._writer is not None
        if not self._writer.is_closing():
            self._writer.write(wire.encode(message))

    async def _receive(self) -> None:
        """Dispatch the child's frames to their requests until it goes away, then report why."""
        assert self._reader is not None
        try:
            while (message := await wire.read_frame(self._reader)) is not None:
                self._dispatch(message)
        except (ConnectionError, wire.ProtocolError) as exc:
            log.warning("runner %d for %s: %s", self.pid, self.spec.name, exc)
        if self._closing:
            return
        reason = self._death = await self._exit_reason()
        log.warning("runner %d for %s ended: %s", self.pid, self.spec.name, reason)
        self._fail_all(RequestError(500, f"{TERMINATED}: {reason}"))
        if not self.exited.done():
            self.exited.set_result(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        stream = self._streams.get(message.get("i"))  # type: ignore[arg-type]
        if stream is None:  # a request already gone (cancelled): its last frames are dropped
            return
        if "t" in message:
            stream.put_nowait(Piece(message["t"], tuple(message.get("l", ()))))
        elif "d" in message:
            self.steps = int(message.get("s", self.steps))
            stream.put_nowait(wire.finished_from_wire(message["d"]))
        elif "v" in message:
            stream.put_nowait(message["v"])
        else:
            stream.put_nowait(RequestError(int(message.get("c", 500)), str(message.get("e", "runner failed"))))

    def _fail_all(self, error: RequestError) -> None:
        for stream in self._streams.values():
            stream.put_nowait(error)
        self._streams.clear()

    async def _exit_reason(self) -> str:
        """What ended the child, as ollama words it: its last error line, else how it exited."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._process.wait(), STOP_GRACE)
        with contextlib.suppress(TimeoutError):  # its last lines, which may say why
            await asyncio.wait_for(asyncio.shield(self._relay), STOP_GRACE)
        code = self._process.returncode
        if self._last_error:
            return self._last_error
        if code is None:
            return "the runner closed its connection"
        if code < 0:
            return f"signal: {signal.strsignal(-code) or -code}".lower()
        return f"exit status {code}"

    async def _relay_output(self) -> None:
        """The child's stdout and stderr, line by line, into the server's log."""
        stream = self._process.stdout
        assert stream is not None
        prefix = f"[{self.pid} {self.spec.name}]"
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            if not text:
                continue
            level_name, _, rest = text.partition(" ")
            level = _LEVELS.get(level_name)
            if level is None:  # native output (an abort message, say), not the child's logging
                level, rest = logging.WARNING, text
            if level >= logging.ERROR or (level == logging.WARNING and _ERROR_LINE.search(rest)):
                self._last_error = rest.split(": ", 1)[-1] if level_name in _LEVELS else rest
            child_log.log(level, "%s %s", prefix, rest)
