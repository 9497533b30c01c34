"""`SegmentWriter` on a real file: buffers written in order at the segment's offsets, blocks
reserved ahead of the writes (never past the segment), and a failed write surfacing."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.mirror.segment_writer import RESERVE_BUFFERS, SegmentWriter
from registry.storage.preallocate import reserve_blocks

BUFFER = 64 * 1024
OFFSET, LENGTH = 3 * BUFFER + 100, 40 * BUFFER + 7  # not block-aligned, like ollama's part sizes
DATA = random.Random(3).randbytes(LENGTH)


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


async def test_buffers_land_in_order_at_the_segment_offsets(sparse: int) -> None:
    written: list[int] = []
    writer = SegmentWriter(sparse, OFFSET, OFFSET + LENGTH, BUFFER, written.append)
    pieces = [BUFFER, 0, 1000, BUFFER] + [BUFFER] * 37 + [LENGTH - 39 * BUFFER - 1000]
    await write_segment(writer, pieces)
    assert os.pread(sparse, LENGTH, OFFSET) == DATA
    assert written == [n for n in pieces if n]  # told of each write that landed, none for an empty buffer
    assert os.pread(sparse, OFFSET, 0) == bytes(OFFSET)  # nothing before the segment


async def test_blocks_are_reserved_ahead_of_the_writes_and_never_past_the_segment(sparse: int) -> None:
    if not reserve_blocks(sparse, 0, 4096):
        pytest.skip("this filesystem cannot reserve blocks (no fallocate)")
    before = allocated(sparse)
    writer = SegmentWriter(sparse, OFFSET, OFFSET + LENGTH, BUFFER, lambda n: None)
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


async def test_a_failed_write_surfaces_at_the_next_delivery(tmp_path: Path) -> None:
    path = tmp_path / "read-only"
    path.write_bytes(bytes(LENGTH))
    fd = os.open(path, os.O_RDONLY)
    try:
        written: list[int] = []
        writer = SegmentWriter(fd, 0, LENGTH, BUFFER, written.append)
        buffer = await writer.buffer()
        await writer.deliver(buffer, BUFFER)
        with pytest.raises(OSError):
            await writer.drain()
        with pytest.raises(OSError):
            await writer.deliver(await writer.buffer(), BUFFER)  # the error stays
        await writer.settle()
        assert written == []  # nothing is claimed written
    finally:
        os.close(fd)
