"""Hand results from the llama.cpp worker thread to an asyncio loop without giving up the GIL.

`loop.call_soon_threadsafe` wakes the loop by writing to a socket, and that write releases the
GIL. The loop thread wakes at once, takes the GIL and runs its whole per-token chain (queue,
generators, JSON, socket write) while the worker, which only needed a few more microseconds of
Python before its next `llama_decode`, waits for the GIL to come back; with every core busy in
llama.cpp's own threads that wait stretched each decode step by 0.2-0.7 ms (5-8% of a token on
two cores).

Here the worker queues callbacks in a deque and wakes the loop through a pipe with libc's
`write` called through `ctypes.PyDLL`, which keeps the GIL. The loop wakes, blocks on the GIL
for the little Python left before `llama_decode` (which releases it), and does its work while
the model computes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_libc = ctypes.PyDLL(None)  # PyDLL: calls keep the GIL (CDLL would release it around the call)
_write_keeping_gil = _libc.write
_write_keeping_gil.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_write_keeping_gil.restype = ctypes.c_ssize_t

_outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Outbox] = weakref.WeakKeyDictionary()


class Outbox:
    """Callbacks queued by worker threads, run on one loop when `flush` wakes it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._items: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._armed = False  # a wake-up byte is in the pipe and the loop has not read it yet
        loop.add_reader(self._read_fd, self._deliver)
        weakref.finalize(self, _close_fds, self._read_fd, self._write_fd)

    def put(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue fn(*args) for the loop (any thread). Nothing runs until `flush`."""
        self._items.append((fn, args))

    def flush(self) -> None:
        """Wake the loop if anything is queued; never releases the GIL, never blocks."""
        if self._items and not self._armed:
            self._armed = True
            _write_keeping_gil(self._write_fd, b"\x01", 1)  # EAGAIN is impossible: one byte at a time

    def _deliver(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up an earlier delivery already consumed
            os.read(self._read_fd, 64)
        self._armed = False  # before draining: anything queued from now on wakes us again
        while self._items:
            fn, args = self._items.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("callback from the model worker failed")


def outbox_for(loop: asyncio.AbstractEventLoop) -> Outbox:
    """The loop's outbox, created on first use; call on the loop's own thread."""
    outbox = _outboxes.get(loop)
    if outbox is None:
        outbox = _outboxes[loop] = Outbox(loop)
    return outbox


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
