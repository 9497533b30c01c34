"""A runner child: one loaded model in its own process, so a crash in llama.cpp costs one load.

Started by runner/engine/process.py as `python -m runner.engine.child FD PARENT_PID LOG_LEVEL`,
with FD its end of a socketpair. It reads the load frame, builds the ordinary `Engine` (batching,
prompt cache, grammars, logprobs, embeddings all live here, as in-process before), answers
"ready", then serves frames (runner/engine/wire.py) until the server goes away.

It never outlives the server: the closed socket (EOF) ends it on every platform, and on Linux
PR_SET_PDEATHSIG also kills it when the server dies without closing anything (SIGKILL).
Ctrl-C in a terminal reaches the whole process group; the child ignores SIGINT and lets the
server decide when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from typing import Any

from runner.engine import wire
from runner.engine.devices import gpu_free_memory
from runner.engine.engine import Engine, Finished
from runner.errors import RequestError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the server dies; elsewhere the socket's EOF does it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the server died before prctl took effect
        os._exit(0)


class ChildServer:
    """Serves one Engine over the socket: requests by id, each answered by its own task."""

    def __init__(self, engine: Engine, writer: asyncio.StreamWriter) -> None:
        self.engine = engine
        self.writer = writer
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def serve(self, reader: asyncio.StreamReader) -> None:
        while (message := await wire.read_frame(reader)) is not None:
            op, request_id = message.get("op"), message.get("id")
            if op == "cancel":
                task = self.tasks.pop(request_id, None)
                if task is not None:
                    task.cancel()
                continue
            if op == "complete":
                work = self._complete(request_id, wire.completion_from_wire(message["completion"]))
            elif op == "embed":
                work = self._embed(request_id, message["inputs"])
            else:
                raise wire.ProtocolError(f"unknown operation {op!r}")
            task = asyncio.create_task(work)
            self.tasks[request_id] = task
            task.add_done_callback(lambda _t, i=request_id: self.tasks.pop(i, None))

    async def _complete(self, request_id: int, completion: Any) -> None:
        try:
            async with contextlib.aclosing(self.engine.complete(completion)) as events:
                async for event in events:
                    if isinstance(event, Finished):
                        self.writer.write(wire.finished_frame(request_id, event, self.engine.steps))
                    else:
                        self.writer.write(wire.piece_frame(request_id, event))
        except RequestError as exc:
            self.writer.write(wire.encode({"i": request_id, "e": exc.message, "c": exc.status}))
        except Exception as exc:  # a failure of this request alone: tell it, keep serving the others
            log.exception("generation failed")
            self.writer.write(wire.encode({"i": request_id, "e": str(exc) or type(exc).__name__, "c": 500}))

    async def _embed(self, request_id: int, inputs: list[list[int]]) -> None:
        try:
            vectors = await self.engine.embed(inputs)
        except RequestError as exc:
            self.writer.write(wire.encode({"i": request_id, "e": exc.message, "c": exc.status}))
        except Exception as exc:  # llama.cpp's failure, told to the request that caused it
            self.writer.write(wire.encode({"i": request_id, "e": str(exc) or type(exc).__name__, "c": 500}))
        else:
            self.writer.write(wire.encode({"i": request_id, "v": vectors}))


async def _main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    load = await wire.read_frame(reader)
    if load is None or load.get("op") != "load":
        return
    spec, settings = wire.spec_from_wire(load["spec"]), wire.settings_from_wire(load["settings"])
    free_before = gpu_free_memory()
    try:
        engine = await asyncio.to_thread(Engine, spec, settings)
    except RequestError as exc:
        writer.write(wire.encode({"op": "failed", "status": exc.status, "message": exc.message}))
        await writer.drain()
        return
    free_after = gpu_free_memory()
    used = sum(max(0, free_before[d] - free_after.get(d, free_before[d])) for d in free_before)
    writer.write(
        wire.encode({
            "op": "ready",
            "num_ctx": engine.num_ctx,
            "n_ctx_train": engine.n_ctx_train,
            "n_embd": engine.n_embd,
            "vram": used if free_before else None,
        })
    )
    server = ChildServer(engine, writer)
    try:
        await server.serve(reader)
    finally:
        for task in list(server.tasks.values()):
            task.cancel()
        await asyncio.gather(*server.tasks.values(), return_exceptions=True)
        await asyncio.to_thread(engine.close)


def main(argv: list[str]) -> int:
    fd, parent_pid, level = int(argv[0]), int(argv[1]), argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_main(fd))
    except (ConnectionError, wire.ProtocolError) as exc:  # the server went away mid-frame
        log.info("runner stopping: %s", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
