"""`SegmentWriter` on a real file: buffers written in order at the segment's offsets, blocks
reserved ahead of the writes (never past the segment), the segments of one file writing through
one shared thread with several writes queued, and a failed write surfacing without any later
write being claimed."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from registry.mirror.segment_writer import BUFFERS, RESERVE_BUFFERS, SegmentWriter
from registry.storage.preallocate import reserve_blocks

BUFFER = 64 * 1024
OFFSET, LENGTH = 3 * BUFFER + 100, 40 * BUFFER + 7  # not block-aligned, like ollama's part sizes
DATA = random.Random(3).randbytes(LENGTH)


@pytest.fixture
def writing() -> Iterator[ThreadPoolExecutor]:
    """The file's one writing thread, as `Fills` makes it."""
    executor = ThreadPoolExecutor(1)
    yield executor
    executor.shutdown()


@pytest.fixture
def sparse(tmp_path: Path) -> Iterator[int]:
    """A sparse file with room for the segment, open for writing."""
    path = tmp_path / "blob-partial"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, OFFSET + LENGTH + 10 * BUFFER)
    yield fd
    os.close(fd)


async def write_segment(writer: SegmentWriter, pieces: list[int]) -> None:
    """Deliver DATA in pieces of the given sizes, as an upstream reader would."""
    pos = 0
    for size in pieces:
        buffer = await writer.buffer()
        buffer[:size] = DATA[pos : pos + size]
        await writer.deliver(buffer, size)
        pos += size
    await writer.drain()


def allocated(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512


async def test_buffers_land_in_order_at_the_segment_offsets(sparse: int, writing: ThreadPoolExecutor) -> None:
    written: list[int] = []
    writer = SegmentWriter(sparse, OFFSET, OFFSET + LENGTH, BUFFER, written.append, writing)
    pieces = [BUFFER, 0, 1000, BUFFER] + [BUFFER] * 37 + [LENGTH - 39 * BUFFER - 1000]
    await write_segment(writer, pieces)
    assert os.pread(sparse, LENGTH, OFFSET) == DATA
    assert written == [n for n in pieces if n]  # told of each write that landed, none for an empty buffer
    assert os.pread(sparse, OFFSET, 0) == bytes(OFFSET)  # nothing before the segment


async def test_blocks_are_reserved_ahead_of_the_writes_and_never_past_the_segment(
        sparse: int, writing: ThreadPoolExecutor) -> None:
    if not reserve_blocks(sparse, 0, 4096):
        pytest.skip("this filesystem cannot reserve blocks (no fallocate)")
    before = allocated(sparse)
    writer = SegmentWriter(sparse, OFFSET, OFFSET + LENGTH, BUFFER, lambda n: None, writing)
    await write_segment(writer, [BUFFER])
    assert writer.ahead == (RESERVE_BUFFERS - 1) * BUFFER  # reserved: 16 buffers from the first byte
    assert allocated(sparse) - before >= RESERVE_BUFFERS * BUFFER
    await write_segment(writer, [BUFFER] * (RESERVE_BUFFERS - 1))
    assert writer.ahead == 0
    await write_segment(writer, [BUFFER])  # past the reservation: the next stretch
    assert writer.ahead == (RESERVE_BUFFERS - 1) * BUFFER
    rest = LENGTH - (RESERVE_BUFFERS + 1) * BUFFER
    await write_segment(writer, [BUFFER] * (rest // BUFFER) + [rest % BUFFER])
    assert writer.ahead == 0
    assert allocated(sparse) - before <= LENGTH + 2 * 4096  # the segment's blocks, nothing beyond


class CountingThread(ThreadPoolExecutor):
    """One writing thread that counts what it is given."""

    def __init__(self) -> None:
        super().__init__(1)
        self.jobs = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


async def test_segments_of_one_file_share_one_writing_thread(tmp_path: Path) -> None:
    """Four segments delivered at once, as a fill's parallel upstream ranges are: every write goes
    to the file's one thread (concurrent writers spin on ext4's inode lock), and each segment's
    bytes still land at its own offsets."""
    quarter = LENGTH // 4
    fd = os.open(tmp_path / "blob-partial", os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, 4 * quarter)
    writing = CountingThread()
    written: list[int] = []

    async def fill(writer: SegmentWriter, start: int) -> None:
        for pos in range(start, start + quarter, BUFFER):
            size = min(BUFFER, start + quarter - pos)
            buffer = await writer.buffer()
            buffer[:size] = DATA[pos : pos + size]
            await writer.deliver(buffer, size)
            await asyncio.sleep(0)  # the other segments deliver in between
        await writer.drain()

    try:
        async with asyncio.TaskGroup() as group:
            for i in range(4):
                writer = SegmentWriter(fd, i * quarter, (i + 1) * quarter, BUFFER, written.append, writing)
                group.create_task(fill(writer, i * quarter))
        assert os.pread(fd, 4 * quarter, 0) == DATA[: 4 * quarter]
        assert writing.jobs == len(written) == 4 * -(-quarter // BUFFER)  # every write, on that thread
    finally:
        writing.shutdown()
        os.close(fd)


async def test_writes_queue_behind_a_slow_one_and_land_in_order(sparse: int, writing: ThreadPoolExecutor) -> None:
    """While the writing thread is held up, the reader goes on receiving into the other buffers
    (no delivery waits for a write); every buffer is told written only once it landed, in order."""
    held = threading.Event()
    writing.submit(held.wait)  # the thread is busy (another segment's write, a slow disk)
    written: list[int] = []
    writer = SegmentWriter(sparse, OFFSET, OFFSET + LENGTH, BUFFER, written.append, writing)
    pieces = ([BUFFER, 1000] * BUFFERS)[: BUFFERS - 1]  # every buffer but one queued
    pos = 0
    try:
        async with asyncio.timeout(5):  # none of this may wait for the held thread
            for size in pieces:
                buffer = await writer.buffer()
                buffer[:size] = DATA[pos : pos + size]
                await writer.deliver(buffer, size)
                pos += size
            spare = await writer.buffer()
        assert written == []
    finally:
        held.set()
    await writer.deliver(spare, 0)
    await writer.drain()
    assert written == pieces
    assert os.pread(sparse, pos, OFFSET) == DATA[:pos]


async def test_a_failed_write_surfaces_and_nothing_after_it_counts(tmp_path: Path,
                                                                     writing: ThreadPoolExecutor) -> None:
    path = tmp_path / "read-only"
    path.write_bytes(bytes(LENGTH))
    fd = os.open(path, os.O_RDONLY)
    try:
        written: list[int] = []
        writer = SegmentWriter(fd, 0, LENGTH, BUFFER, written.append, writing)
        for _ in range(BUFFERS):  # queued together: the first fails, the ones behind it must not be claimed
            await writer.deliver(await writer.buffer(), BUFFER)
        with pytest.raises(OSError):
            await writer.drain()
        with pytest.raises(OSError):
            await writer.deliver(await writer.buffer(), BUFFER)  # the error stays
        await writer.settle()
        assert written == []  # nothing is claimed written
    finally:
        os.close(fd)
