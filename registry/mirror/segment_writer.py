"""`SegmentWriter`: one fill segment's receive buffers and its writes into the partial file.

The upstream reader receives straight into a buffer this writer lends (`buffer`) and hands it
back full (`deliver`); the writer stores it at the segment's next offset with one `pwrite` in a
worker thread while the reader fills the other buffer. So a MiB costs one thread hop and one
system call, not one per network packet. A segment's writes run one at a time, in order, so what
is written is always a prefix of the segment: what a checkpoint may claim and readers may send.

The writers of one file share one thread (`executor`): ext4 takes the file's inode lock for every
buffered write and every fallocate, and writes from several threads at once spin on that lock
in the kernel instead of sleeping — 15% of a cold fill's CPU on this 2-vCPU machine (perf) went
to that spinning when each segment's writes ran in threads of their own.

Before a write passes the blocks reserved so far, the same thread reserves the next stretch of
the segment (`preallocate.reserve_blocks`, RESERVE_BUFFERS buffers' worth): writing into
reserved blocks is the cheaper write, and a full disk shows up as ENOSPC there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial

from registry.storage.preallocate import reserve_blocks

BUFFERS = 2  # one receiving while the other is written
RESERVE_BUFFERS = 16  # blocks reserved ahead of the writes, in buffers


class SegmentWriter:
    """Writes the bytes of [offset, end) of a file in order; `on_written(n)` is told each write
    that landed. `ahead` is how many bytes past those it holds reserved on the disk."""

    def __init__(self, fd: int, offset: int, end: int, buffer_size: int, on_written: Callable[[int], None],
                 executor: Executor | None = None) -> None:
        self._fd = fd
        self._executor = executor  # the file's one writing thread (None: the loop's default pool)
        self._next = offset  # where the next delivered buffer goes
        self._landed = offset  # the end of what is written
        self._end = end
        self._buffer_size = buffer_size
        self._on_written = on_written
        self._reserved = offset  # blocks of [offset, _reserved) are allocated
        self._reserving = True  # until the filesystem says it cannot
        self._free: list[bytearray] = []
        self._made = 0
        self._writing: asyncio.Future[bool] | None = None

    @property
    def ahead(self) -> int:
        return max(self._reserved - self._landed, 0)

    async def buffer(self) -> bytearray:
        if not self._free and self._made >= BUFFERS:
            await self.drain()
        if self._free:
            return self._free.pop()
        self._made += 1
        return bytearray(self._buffer_size)

    async def deliver(self, buffer: bytearray, n: int) -> None:
        if n == 0:
            self._free.append(buffer)
            return
        await self.drain()
        offset, self._next = self._next, self._next + n
        reserve = 0
        if self._reserving and offset + n > self._reserved:
            reserve = min(max(offset + n, self._reserved + RESERVE_BUFFERS * self._buffer_size), self._end)
        loop = asyncio.get_running_loop()
        writing = loop.run_in_executor(self._executor, _store, self._fd, memoryview(buffer)[:n], offset,
                                       self._reserved, reserve)
        writing.add_done_callback(partial(self._stored, buffer, n, reserve))
        self._writing = writing

    async def drain(self) -> None:
        """Wait for the write in flight; raises its error (a full disk…)."""
        if self._writing is not None:
            await asyncio.shield(self._writing)  # cancelled, the write still lands: `settle` waits for it
            self._writing = None

    async def settle(self) -> None:
        """Wait, even after a cancellation, until no write is in flight: the file stays open until then."""
        if self._writing is not None:
            await asyncio.wait([self._writing])

    def _stored(self, buffer: bytearray, n: int, reserve: int, writing: asyncio.Future[bool]) -> None:
        self._free.append(buffer)
        if writing.cancelled() or writing.exception() is not None:
            return
        if reserve:
            if writing.result():
                self._reserved = reserve
            else:
                self._reserving = False
        self._landed += n
        self._on_written(n)


def _store(fd: int, data: memoryview, offset: int, reserved: int, reserve: int) -> bool:
    """Reserve [reserved, reserve) first when asked (False: not possible here), then write `data`."""
    done = reserve_blocks(fd, reserved, reserve - reserved) if reserve else True
    while data:  # a short write is rare (signals, quotas): write the rest
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n
    return done
