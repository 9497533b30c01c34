"""`SegmentWriter`: one fill segment's receive buffers and its writes into the partial file.

The upstream reader receives straight into a buffer this writer lends (`buffer`) and hands it
back full (`deliver`); the writer stores it at the segment's next offset with one `pwrite` on the
file's writing thread while the reader fills the next buffer. So a MiB costs one thread hop and
one system call, not one per network packet.

The writers of one file share one thread (`executor`, a single worker): ext4 takes the file's
inode lock for every buffered write and every fallocate, and writes from several threads at once
spin on that lock in the kernel instead of sleeping — 15% of a cold fill's CPU on this 2-vCPU
machine (perf) went to that spinning when each segment's writes ran in threads of their own.
One thread also runs a segment's writes in the order they were delivered, so several may be
queued at once (up to BUFFERS - 1) and what has landed is still always a prefix of the segment:
what a checkpoint may claim and readers may send. Why queue several: a write's round trip (the
hop to the thread, the writes of the other segments ahead of it, the hop back to a busy event
loop) took ~2 ms per MiB against 0.4 ms of writing, and with one write in flight the reader
waited for that round trip on every buffer.

Before a write passes the blocks reserved so far, the same thread reserves the next stretch of
the segment (`preallocate.reserve_blocks`, RESERVE_BUFFERS buffers' worth): writing into
reserved blocks is the cheaper write, and a full disk shows up as ENOSPC there.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial

from registry.storage.preallocate import reserve_blocks

BUFFERS = 3  # one receiving while the others wait for, or are in, their write
RESERVE_BUFFERS = 16  # blocks reserved ahead of the writes, in buffers


class SegmentWriter:
    """Writes the bytes of [offset, end) of a file in order; `on_written(n)` is told each write
    that landed. `ahead` is how many bytes past those it holds reserved on the disk.

    `executor` must run one job at a time, in submission order (a single-worker pool): the
    writes of a segment are queued there without waiting for each other.
    """

    def __init__(self, fd: int, offset: int, end: int, buffer_size: int, on_written: Callable[[int], None],
                 executor: Executor) -> None:
        self._fd = fd
        self._executor = executor
        self._next = offset  # where the next delivered buffer goes
        self._landed = offset  # the end of what is written
        self._end = end
        self._buffer_size = buffer_size
        self._on_written = on_written
        self._reserved = offset  # blocks of [offset, _reserved) are allocated
        self._asked = offset  # blocks up to here are allocated or queued to be
        self._reserving = True  # until the filesystem says it cannot
        self._free: list[bytearray] = []
        self._made = 0
        self._queued: deque[asyncio.Future[None]] = deque()  # resolved as each queued write is accounted, oldest first
        self._failure: BaseException | None = None  # a write failed: nothing after it counts

    @property
    def ahead(self) -> int:
        return max(self._reserved - self._landed, 0)

    async def buffer(self) -> bytearray:
        while not self._free and self._made >= BUFFERS:
            await self._oldest()
        if self._free:
            return self._free.pop()
        self._made += 1
        return bytearray(self._buffer_size)

    async def deliver(self, buffer: bytearray, n: int) -> None:
        """Queue `buffer[:n]` to be written next; raises the error of a write that failed before."""
        if self._failure is not None:
            self._free.append(buffer)
            raise self._failure
        if n == 0:
            self._free.append(buffer)
            return
        offset, self._next = self._next, self._next + n
        reserve_from, reserve_to = self._asked, 0  # 0: nothing to reserve with this write
        if self._reserving and offset + n > self._asked:
            reserve_to = min(max(offset + n, self._asked + RESERVE_BUFFERS * self._buffer_size), self._end)
            self._asked = reserve_to
        loop = asyncio.get_running_loop()
        accounted = loop.create_future()
        writing = loop.run_in_executor(self._executor, _store, self._fd, memoryview(buffer)[:n], offset,
                                       reserve_from, reserve_to)
        writing.add_done_callback(partial(self._stored, buffer, n, reserve_to, accounted))
        self._queued.append(accounted)

    async def drain(self) -> None:
        """Wait for every queued write; raises the first error (a full disk…)."""
        while self._queued:
            await self._oldest()
        if self._failure is not None:
            raise self._failure

    async def settle(self) -> None:
        """Wait, even after a cancellation, until no write is queued: the file stays open until then."""
        if self._queued:
            await asyncio.wait(list(self._queued))

    async def _oldest(self) -> None:
        # cancelled, the write still lands: `settle` waits for it
        await asyncio.shield(self._queued[0])

    def _stored(self, buffer: bytearray, n: int, reserve: int, accounted: asyncio.Future[None],
                writing: asyncio.Future[bool]) -> None:
        """A write ended (in delivery order, one thread): count it, unless it or one before it failed."""
        self._free.append(buffer)
        self._queued.popleft()
        accounted.set_result(None)
        error = writing.exception()
        if self._failure is not None or error is not None:
            self._failure = self._failure or error
            return  # a later write may have landed past the failed one: not a prefix, never counted
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
