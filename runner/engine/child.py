"""A runner child: one loaded model in its own process, so a crash in llama.cpp costs one load.

Started by runner/engine/process.py as `python -m runner.engine.child COMMANDS EVENTS PARENT_PID
LOG_LEVEL`, COMMANDS and EVENTS its ends of two socketpairs (server → child, child → server). It
reads the load frame, builds the ordinary `Engine` (batching, prompt cache, grammars, logprobs,
embeddings all live here, as in-process before), answers "ready", then serves frames
(runner/engine/wire.py) until the server goes away.

It never outlives the server: the closed commands socket (EOF) ends it on every platform, and on Linux
PR_SET_PDEATHSIG also kills it when the server dies without closing anything (SIGKILL).
Ctrl-C in a terminal reaches the whole process group; the child ignores SIGINT and lets the
server decide when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from runner.engine import wire
from runner.engine.devices import gpu_free_memory
from runner.engine.engine import Completion, Engine, Failure, Finished, Piece
from runner.errors import RequestError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _nothing() -> None:
    """The cancel of a request not yet queued: cancelling it only removes it from `cancels`."""


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the server dies; elsewhere the socket's EOF does it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the server died before prctl took effect
        os._exit(0)


class Events:
    """The child → server socket, written whole-frame under a lock from any thread.

    Blocking on purpose: the model's worker thread writes each token's frame itself (a ~5 µs
    syscall), so no event loop wakes in the child per token; a full socket holds the worker back
    instead of queueing without bound. A write to a server that is gone is dropped: the commands
    socket's EOF ends the child."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, frame: bytes) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._sock.sendall(frame)

    def message(self, message: dict[str, Any]) -> None:
        self.send(wire.encode(message))


class ChildServer:
    """Serves one Engine: commands read on the event loop, answers written by whoever has them."""

    def __init__(self, engine: Engine, events: Events) -> None:
        self.engine = engine
        self.events = events
        self.cancels: dict[int, Callable[[], None]] = {}  # generations running, by request id
        self.tasks: set[asyncio.Task[None]] = set()  # embeddings, and images being read

    async def serve(self, commands: asyncio.StreamReader) -> None:
        while (message := await wire.read_frame(commands)) is not None:
            op, request_id = message.get("op"), message.get("id")
            if op == "cancel":
                cancel = self.cancels.pop(request_id, None)
                if cancel is not None:
                    cancel()
            elif op == "complete":
                completion = wire.completion_from_wire(message["completion"])
                if completion.images:
                    self.cancels[request_id] = _nothing  # until its images are read: cancelling drops it
                    self._spawn(self._start_with_images(request_id, completion))
                else:
                    self.cancels[request_id] = self.engine.start(completion, functools.partial(self._emit, request_id))
            elif op == "embed":
                self._spawn(self._embed(request_id, message["inputs"]))
            else:
                raise wire.ProtocolError(f"unknown operation {op!r}")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _start_with_images(self, request_id: int, completion: Completion) -> None:
        """Read and tokenize a request's images in a thread (decoding a photo takes milliseconds the
        other sequences' tokens should not wait for), then queue it; a bad image is that request's 400."""
        try:
            images = await asyncio.to_thread(self.engine.prepare, completion)
        except RequestError as exc:
            self._refuse(request_id, exc.message, exc.status)
            return
        except Exception as exc:  # mtmd's failure, told to the request that caused it
            self._refuse(request_id, str(exc) or type(exc).__name__, 500)
            return
        assert images is not None
        if self.cancels.get(request_id) is not _nothing:  # cancelled meanwhile
            images.free()
            return
        try:
            self.cancels[request_id] = self.engine.start(completion, functools.partial(self._emit, request_id), images)
        except RequestError as exc:  # the model is being unloaded
            images.free()
            self._refuse(request_id, exc.message, exc.status)

    def _refuse(self, request_id: int, message: str, status: int) -> None:
        self.cancels.pop(request_id, None)
        self.events.message({"i": request_id, "e": message, "c": status})

    def _emit(self, request_id: int, event: Piece | Finished | Failure) -> None:
        """One generation event, on the engine's worker thread: straight to the socket."""
        if isinstance(event, Piece):
            self.events.send(wire.piece_frame(request_id, event))
            return
        self.cancels.pop(request_id, None)
        if isinstance(event, Finished):
            self.events.send(wire.finished_frame(request_id, event, self.engine.steps))
        else:
            self.events.message({"i": request_id, "e": event.message, "c": 500})

    async def _embed(self, request_id: int, inputs: list[list[int]]) -> None:
        try:
            vectors = await self.engine.embed(inputs)
        except RequestError as exc:
            self._refuse(request_id, exc.message, exc.status)
        except Exception as exc:  # llama.cpp's failure, told to the request that caused it
            self._refuse(request_id, str(exc) or type(exc).__name__, 500)
        else:
            self.events.message({"i": request_id, "v": vectors})


async def _main(commands_fd: int, events_fd: int) -> None:
    commands, _writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=commands_fd))
    events = Events(socket.socket(fileno=events_fd))
    load = await wire.read_frame(commands)
    if load is None or load.get("op") != "load":
        return
    spec, settings = wire.spec_from_wire(load["spec"]), wire.settings_from_wire(load["settings"])
    free_before = gpu_free_memory()
    try:
        engine = await asyncio.to_thread(Engine, spec, settings)
    except RequestError as exc:
        events.message({"op": "failed", "status": exc.status, "message": exc.message})
        return
    free_after = gpu_free_memory()
    used = sum(max(0, free_before[d] - free_after.get(d, free_before[d])) for d in free_before)
    events.message({
        "op": "ready",
        "num_ctx": engine.num_ctx,
        "n_ctx_train": engine.n_ctx_train,
        "n_embd": engine.n_embd,
        "vram": used if free_before else None,
    })
    server = ChildServer(engine, events)
    try:
        await server.serve(commands)
    finally:
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
        await asyncio.to_thread(engine.close)


def main(argv: list[str]) -> int:
    commands_fd, events_fd, parent_pid, level = int(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_main(commands_fd, events_fd))
    except (ConnectionError, wire.ProtocolError) as exc:  # the server went away mid-frame
        log.info("runner stopping: %s", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
