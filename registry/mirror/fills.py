"""Single-flight upstream fills: one transfer per digest in the process, readable while it runs.

A fill writes `blobs/sha256-<hex>-partial` in segments laid out exactly like ollama's download
parts (16 parts of clamp(size/16, 100 MB, 1 GB)) and fetches up to 16 of them concurrently. Why
segments: ollama's client asks for its 16 parts at once and gives up on a part that sees no byte
for 30 s; with the same layout every part it asks for is being filled from its first byte, so no
part waits behind the others, and the upstream still sends each byte exactly once. A reader of
any other range simply waits for the segment that covers it (no extra upstream range fetch).

Each segment's bytes are received straight into buffers its `SegmentWriter` lends (the body is
read off the connection, `body.py`) and written with one pwrite per MiB into blocks reserved a
little ahead; readers waiting for a byte are woken when a write covers it, not per packet.
Progress (bytes done per segment) is saved in the `fills` table once a second, after the
partial file is fdatasync'ed, so after kill -9 the next request resumes every segment where it
stopped. (A table rather than ollama's `-partial-N` sidecar files: one transaction per
checkpoint, and prune and status can list fills with a query.) While bytes arrive, a hasher
follows the contiguous prefix in order, reading it back in runs of 8 MiB, so little is left to
hash when the last byte lands. Once the whole file hashes to its digest the fill is `matched`
(a response covering the whole blob may send its last byte now: the bytes are right, and the
fsync of the whole file, a tenth of a second per 256 MiB here, need not delay the client); the
blob becomes `verified` once it is then renamed to its final name and recorded in the catalogue. A mismatch
moves the partial file to `quarantine/`, fails every waiting reader and forgets the progress,
so the next request fetches from scratch. The fill runs in its own task: a client that
disconnects does not stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from registry.egress.gate import EgressRefused
from registry.mirror.segment_writer import SegmentWriter
from registry.mirror.upstream import BlobSource, Upstream, UpstreamError
from registry.model.names import Digest
from registry.storage.catalog import Catalog
from registry.storage.disk import is_disk_full
from registry.storage.fill_claims import Claim, ClaimLost, FillClaims, FillSource
from registry.storage.store import QUARANTINE_DIR, BlobStore
from registry.units import format_byte_size

log = logging.getLogger("corral.fills")

SEGMENTS = 16  # ollama's numDownloadParts: also the number of segments fetched at once
MIN_SEGMENT = 100_000_000  # ollama's minDownloadPartSize (decimal MB)
MAX_SEGMENT = 1_000_000_000  # ollama's maxDownloadPartSize
FLUSH_INTERVAL = 1.0  # seconds between progress checkpoints
BUFFER_SIZE = 1024 * 1024  # a segment's receive buffer, so its writes: measured cheapest (4 MiB cost more CPU)
HASH_CHUNK = 1024 * 1024  # the hasher's one read buffer
HASH_STEP = 8 * 1024 * 1024  # the hasher waits for runs this long: a thread hop per 8 MiB, not per write
DISK_HEADROOM = 8 * 1024 * 1024  # left free beside the blobs: the catalogue's journal must always fit


class FillError(Exception):
    """The fill did not produce a verified blob; `cause` is the upstream error, if any."""

    def __init__(self, message: str, cause: Exception | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class DigestMismatch(FillError):
    """The bytes arrived whole but hash to another digest: quarantined, never served."""


class DiskFull(FillError):
    """The store's filesystem cannot hold the blob: found before fetching (even after a prune),
    or when a write failed mid-fill, and then the partial file is removed, since on a full disk
    it would wedge the catalogue (SQLite needs room to commit)."""


@dataclass
class Segment:
    offset: int
    length: int
    done: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def complete(self) -> bool:
        return self.done >= self.length


def segment_layout(size: int, min_segment: int = MIN_SEGMENT) -> list[Segment]:
    """ollama's part split: clamp(size/16, min, 1 GB) per part, the last one shorter."""
    if size <= 0:
        return []
    part = min(max(size // SEGMENTS, min_segment), MAX_SEGMENT)
    return [Segment(offset, min(part, size - offset)) for offset in range(0, size, part)]


class Fill:
    """One blob being filled. Readers ask `available`/`wait_for`; only Fills changes its state."""

    def __init__(self, source: BlobSource, size: int, media_type: str | None, path: Path) -> None:
        self.source = source
        self.size = size
        self.media_type = media_type
        self.path = path
        self.segments: list[Segment] = []
        self.flowing = False  # bytes are arriving (or were all on disk already)
        self.finished = False
        self.error: FillError | None = None
        self._matched = False  # the bytes hashed to the digest (publishing may still be under way)
        self.dirty = False
        self.writers: set[SegmentWriter] = set()  # the segments being written now
        self._changed = asyncio.Event()  # state changes: flowing, finished
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (position, woken once a byte is there)
        self._clock: tuple[float, int] | None = None  # (monotonic time, bytes on disk) when the transfer began
        self.fetched_by: str | None = None  # in a cluster, the other node fetching it while this one follows

    @property
    def digest(self) -> Digest:
        return self.source.digest

    @property
    def completed(self) -> int:
        return self.size if self.verified else sum(s.done for s in self.segments)

    @property
    def unwritten(self) -> int:
        """Bytes still to be written that the disk has not set aside yet (the writers reserve
        blocks a little ahead of their writes)."""
        return self.size - self.completed - sum(writer.ahead for writer in self.writers)

    @property
    def verified(self) -> bool:
        return self.finished and self.error is None

    @property
    def matched(self) -> bool:
        """The whole blob is on disk and hashes to its digest: it may be sent to its last byte."""
        return self._matched or self.verified

    def start_clock(self) -> None:
        """Note when the transfer begins and what is on disk already (a resumed fill's bytes are not speed)."""
        self._clock = (time.monotonic(), self.completed)

    def speed(self) -> float | None:
        """Bytes per second since the transfer began; None during its first second (too early to say)."""
        if self._clock is None:
            return None
        began, before = self._clock
        elapsed = time.monotonic() - began
        return (self.completed - before) / elapsed if elapsed >= 1.0 else None

    def available(self, pos: int) -> int:
        """End of the run of bytes present on disk from `pos` (== pos when none is there yet)."""
        if self.verified:
            return self.size
        end = pos
        for seg in self.segments:
            if seg.end <= end:
                continue
            if seg.offset > end or seg.offset + seg.done <= end:
                break
            end = seg.offset + seg.done
            if not seg.complete:
                break
        return end

    async def wait_for(self, pos: int) -> int:
        """Wait until a byte at `pos` is present; return the end of the present run. Raises FillError."""
        while True:
            if self.error is not None:
                raise self.error
            end = self.available(pos)
            if end > pos or self.verified:
                return end
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((pos, waiter))
            await waiter

    async def wait_started(self) -> None:
        """Wait until upstream delivers bytes (or they are already on disk); raises FillError."""
        while not (self.flowing or self.finished):
            await self._changed.wait()
        if self.error is not None and not self.flowing:
            raise self.error

    async def wait_matched(self) -> None:
        """Wait until the bytes are known to match the digest; raises FillError if they never will."""
        while not (self.matched or self.finished):
            await self._changed.wait()
        if not self.matched and self.error is not None:
            raise self.error

    async def wait_finished(self) -> None:
        """Wait for the verdict; raises FillError if there is no verified blob."""
        while not self.finished:
            await self._changed.wait()
        if self.error is not None:
            raise self.error

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def written(self, seg: Segment, n: int) -> None:
        """`n` more bytes of `seg` are on disk: wake exactly the readers waiting for one of them."""
        seg.done += n
        self.dirty = True
        start, end = seg.offset, seg.offset + seg.done
        self._arrived(lambda pos: start <= pos < end)

    def advance(self, segments: list[Segment]) -> None:
        """Another node's checkpointed progress (this node follows its fill): take it, and wake
        the readers waiting for a byte now there."""
        self.segments = segments
        if self.completed:
            self._arrived(lambda pos: self.available(pos) > pos)

    def _arrived(self, present: Callable[[int], bool]) -> None:
        """Bytes arrived: the fill is flowing, and the readers waiting at a `present` position wake."""
        if not self.flowing:
            self.flowing = True
            self.notify()
        waiting = []
        for pos, waiter in self._waiters:
            if waiter.done():
                continue
            if present(pos):
                waiter.set_result(None)
            else:
                waiting.append((pos, waiter))
        self._waiters = waiting

    def match(self) -> None:
        """The whole file hashed to the digest: whole-blob responses may end before it is published."""
        self._matched = True
        self.notify()

    def finish(self, error: FillError | None = None) -> None:
        self.finished, self.error = True, error
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters = []
        self.notify()


class InFlight:
    """The fills running in this process, by digest.

    An object of its own because two parties need it and one of them is needed by `Fills`: the
    pruner must see which blobs are being filled (never evict them, count their bytes as spoken
    for), and `Fills` asks the pruner to make room before a fill that would not fit.
    """

    def __init__(self) -> None:
        self._fills: dict[Digest, Fill] = {}

    def get(self, digest: Digest) -> Fill | None:
        return self._fills.get(digest)

    def digests(self) -> list[Digest]:
        return list(self._fills)

    def unwritten_bytes(self, besides: Fill | None = None) -> int:
        """Bytes the running fills (but `besides`) still have to write beyond the blocks they hold
        reserved: disk space spoken for that the filesystem still counts as free."""
        return sum(fill.unwritten for fill in self._fills.values() if fill is not besides)

    def add(self, fill: Fill) -> None:
        self._fills[fill.digest] = fill

    def remove(self, fill: Fill) -> None:
        if self._fills.get(fill.digest) is fill:
            del self._fills[fill.digest]


class Fills:
    """The process-wide registry of fills: `start` joins a running fill or begins one.

    In a cluster, `claims` decides whether this node fetches a blob or follows the node that does
    (`storage.fill_claims`); a follower serves the bytes that node has checkpointed, and takes the
    fill over when that node goes silent or stops.
    """

    def __init__(
        self,
        store: BlobStore,
        catalog: Catalog,
        claims: FillClaims,
        upstream: Upstream,
        in_flight: InFlight,
        make_room: Callable[[], Awaitable[None]],
        *,
        min_segment: int = MIN_SEGMENT,
        flush_interval: float = FLUSH_INTERVAL,
        buffer_size: int = BUFFER_SIZE,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.claims = claims
        self.upstream = upstream
        self.in_flight = in_flight
        self.make_room = make_room  # one prune, awaited when a fill would not fit on the disk
        self.min_segment = min_segment
        self.flush_interval = flush_interval
        self.buffer_size = buffer_size
        self._tasks: set[asyncio.Task[None]] = set()
        self.verification_failures = 0  # fills whose bytes did not hash to their digest (/metrics)

    def start(self, source: BlobSource, size: int, media_type: str | None = None) -> Fill:
        """Join the running fill of `source.digest`, or start one. Synchronous, hence race-free."""
        fill = self.in_flight.get(source.digest)
        if fill is None:
            fill = Fill(source, size, media_type, self.store.partial_path(source.digest))
            self.in_flight.add(fill)
            task = asyncio.create_task(self._run(fill), name=f"fill {source.digest.short}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return fill

    async def close(self) -> None:
        """Stop every fill, saving its progress for the next start."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- one fill ----------------------------------------------------------------------------

    async def _run(self, fill: Fill) -> None:
        try:
            while not fill.finished:
                if await self.catalog.servable_size(fill.digest) is not None:
                    fill.finish()  # another fill verified it between the caller's check and start()
                    return
                claim = await self.claims.take(self._record(fill))
                if claim is Claim.STORED:
                    fill.finish()
                elif claim is Claim.FOLLOWING:
                    await self._follow(fill)
                else:
                    await self._own(fill)
        except asyncio.CancelledError:
            fill.finish(FillError(f"fill of {fill.digest} interrupted: server shutting down"))
            raise
        except (UpstreamError, EgressRefused) as exc:
            log.warning("fill of %s stopped (progress kept): %s", fill.digest.short, exc)
            fill.finish(FillError(str(exc), exc))
        except DiskFull as exc:
            log.error("%s", exc)
            fill.finish(exc)
        except Exception as exc:
            if is_disk_full(exc):
                await self._give_up_space(fill)
                message = f"the disk filled up while storing {fill.digest}; its partial download was removed"
                log.error("%s (%s)", message, exc)
                fill.finish(DiskFull(message, exc))
            elif isinstance(exc, OSError):
                log.error("fill of %s stopped (progress kept): %s", fill.digest.short, exc)
                fill.finish(FillError(f"storing {fill.digest} failed: {exc}", exc))
            elif isinstance(exc, FillError):
                fill.finish(exc)
            else:
                log.exception("fill of %s failed", fill.digest.short)
                fill.finish(FillError(f"fill of {fill.digest} failed: {exc}", exc))
        finally:
            self.in_flight.remove(fill)
            self.upstream.forget(fill.source)
            with contextlib.suppress(Exception):  # the row was forgotten, or the catalogue is unreachable
                await asyncio.shield(self.claims.release(fill.digest))  # another node may resume it now

    def _record(self, fill: Fill) -> FillSource:
        return FillSource(fill.digest, fill.size, fill.media_type, fill.source.endpoint.base, fill.source.repository)

    async def _own(self, fill: Fill) -> None:
        """Fetch the blob, resuming from saved progress; back to following if another node took
        the fill over meanwhile (this node was silent too long)."""
        fill.fetched_by = None
        try:
            await self._prepare(fill)
            await self._verify_and_publish(fill, await self._transfer(fill))
        except ClaimLost as exc:
            log.warning("%s; following it", exc)

    async def _follow(self, fill: Fill) -> None:
        """Serve another node's fill from the shared partial file as its checkpoints advance, until
        it ends (published, or given up) or its owner stops or goes silent (then back to `_run`,
        which takes it over)."""
        interval = self.flush_interval / 2  # progress changes once per checkpoint: twice as often sees each
        while True:
            record = await self.claims.look(fill.digest)
            if record is None:
                if await self.catalog.servable_size(fill.digest) is not None:
                    fill.finish()
                else:
                    fill.finish(FillError(f"the fill of {fill.digest} on another node ended without a verified "
                                          "blob; the next request fetches it again"))
                return
            if not record.live:
                return
            if fill.fetched_by is None:
                log.info("following the fill of %s by node %s", fill.digest.short, record.owner_name)
                fill.start_clock()
            fill.fetched_by = record.owner_name
            segments = _parse_segments(record.segments, record.size, fill.size)
            if segments:
                fill.advance(segments)
            await asyncio.sleep(interval)

    async def _prepare(self, fill: Fill) -> None:
        """Resume from the saved progress if it still matches the partial file, else start afresh."""
        saved = await self.claims.saved(fill.digest)
        segments = _parse_segments(saved.segments, saved.size, fill.size) if saved is not None else None
        if segments is not None and await asyncio.to_thread(_has_size, fill.path, fill.size):
            await self._ensure_room(fill, fill.size - sum(seg.done for seg in segments))
            fill.segments = segments
            log.info("resuming fill of %s at %d of %d bytes", fill.digest.short, fill.completed, fill.size)
        else:
            await self._ensure_room(fill, fill.size)
            await asyncio.to_thread(_allocate, fill.path, fill.size)
            fill.segments = segment_layout(fill.size, self.min_segment)
        fill.start_clock()
        await self.claims.begin(self._record(fill), _encode(fill.segments),
                                saved.created_at if saved is not None else time.time())

    async def _ensure_room(self, fill: Fill, needed: int) -> None:
        """Refuse, before any byte is fetched, a fill the disk cannot hold after a prune: failing
        fast beats filling the disk and failing then. Other fills' unwritten bytes count as used."""
        others = self.in_flight.unwritten_bytes(besides=fill)

        async def room() -> int:
            return await asyncio.to_thread(self.store.free_space) - others - DISK_HEADROOM

        if await room() >= needed:
            return
        await self.make_room()
        if (left := await room()) < needed:
            raise DiskFull(
                f"not enough disk space for {fill.digest}: {format_byte_size(needed)} to store, "
                f"{format_byte_size(max(left, 0))} free after pruning; free space or pin fewer models"
            )

    async def _give_up_space(self, fill: Fill) -> None:
        """Drop a fill's partial file, then its progress row (SQLite needs the freed room to commit)."""
        await asyncio.to_thread(fill.path.unlink, missing_ok=True)
        try:
            await self.claims.forget(fill.digest)
        except Exception as exc:
            log.warning("could not forget the progress of %s: %s", fill.digest.short, exc)

    async def _transfer(self, fill: Fill) -> Digest:
        """Fetch the missing segments; meanwhile hash the bytes in order as they become contiguous,
        so that little is left to hash when the last byte lands (on the other core: hashlib and
        pread release the GIL)."""
        hasher = asyncio.create_task(_hash_in_order(fill))
        try:
            await self._fetch_segments(fill)
        except BaseException:
            hasher.cancel()
            raise
        return await hasher

    async def _fetch_segments(self, fill: Fill) -> None:
        fd = await asyncio.to_thread(os.open, fill.path, os.O_RDWR)
        writing = ThreadPoolExecutor(1, thread_name_prefix=f"fill-{fill.digest.short}")  # see SegmentWriter
        try:
            if all(seg.complete for seg in fill.segments):
                fill.flowing = True
                fill.notify()
            checkpoints = asyncio.create_task(self._checkpoint_loop(fill, fd))
            slots = asyncio.Semaphore(SEGMENTS)  # > 16 segments (blobs over 16 GB): the rest queue in order
            try:
                async with asyncio.TaskGroup() as group:
                    for seg in fill.segments:
                        if not seg.complete:
                            group.create_task(self._fill_segment(fill, seg, fd, slots, writing))
            except BaseExceptionGroup as group_error:
                raise _first(group_error) from None
            finally:
                checkpoints.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checkpoints
                if not all(seg.complete for seg in fill.segments):  # complete: publishing fsyncs it instead
                    try:
                        await asyncio.shield(self._checkpoint(fill, fd))
                    except ClaimLost:
                        pass  # the progress is the new owner's to save
                    except Exception as exc:  # never hide why the transfer stopped (a full disk fails both)
                        log.warning("could not save the progress of %s: %s", fill.digest.short, exc)
        finally:
            writing.shutdown(wait=False)  # every segment settled: nothing is queued any more
            await asyncio.to_thread(os.close, fd)

    async def _fill_segment(self, fill: Fill, seg: Segment, fd: int, slots: asyncio.Semaphore,
                            writing: ThreadPoolExecutor) -> None:
        async with slots:
            start = seg.offset + seg.done
            writer = SegmentWriter(fd, start, seg.end, self.buffer_size, lambda n: fill.written(seg, n), writing)
            fill.writers.add(writer)
            try:
                await self.upstream.fetch_range(fill.source, start, seg.end, writer)
                await writer.drain()
            finally:
                await writer.settle()  # the file is closed after the segments: no write may outlive it
                fill.writers.discard(writer)

    async def _checkpoint_loop(self, fill: Fill, fd: int) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self._checkpoint(fill, fd)

    async def _checkpoint(self, fill: Fill, fd: int) -> None:
        """Persist progress: the bytes first (fdatasync), then the claim that they are there. In a
        cluster every tick also renews this node's hold on the fill, bytes or not."""
        if not fill.dirty:
            if self.claims.clustered:
                await self.claims.save(fill.digest, None)
            return
        fill.dirty = False
        claimed = _encode(fill.segments)
        await asyncio.to_thread(os.fdatasync, fd)
        await self.claims.save(fill.digest, claimed)

    async def _verify_and_publish(self, fill: Fill, actual: Digest) -> None:
        if actual != fill.digest:
            kept = await asyncio.to_thread(self._quarantine, fill)
            self.verification_failures += 1
            await self.claims.forget(fill.digest)
            log.error("fill of %s failed verification (got %s); quarantined as %s", fill.digest, actual, kept.name)
            raise DigestMismatch(
                f"digest mismatch for {fill.digest}: upstream sent {actual}; "
                "the data was quarantined and will be fetched again on the next request"
            )
        fill.match()
        async with self.claims.publishing(fill.digest):
            await asyncio.to_thread(self._publish, fill)
            await self.catalog.record_blob(fill.digest, fill.size, media_type=fill.media_type)
        fill.finish()
        log.info("filled %s (%d bytes) from %s", fill.digest.short, fill.size, fill.source.endpoint.base)

    def _publish(self, fill: Fill) -> None:
        fd = os.open(fill.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(fill.path, self.store.path(fill.digest))
        dir_fd = os.open(self.store.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _quarantine(self, fill: Fill) -> Path:
        qdir = self.store.root.parent / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        target = qdir / f"{fill.digest.filename}-{secrets.token_hex(4)}"
        os.replace(fill.path, target)
        return target


async def _hash_in_order(fill: Fill) -> Digest:
    """sha256 of the partial file, following the contiguous prefix as the segments fill it, in
    runs of HASH_STEP (the rest of the blob at the end).

    Its own file handle, closed only once no hashing thread uses it: a cancelled hasher's thread
    may still be running after the fill ends.
    """
    h = hashlib.sha256()
    buffer = memoryview(bytearray(HASH_CHUNK))
    fd = await asyncio.to_thread(os.open, fill.path, os.O_RDONLY)
    hashing: asyncio.Future[None] | None = None
    try:
        pos = 0
        while pos < fill.size:
            end = await fill.wait_for(pos)
            if end - pos < HASH_STEP and end < fill.size:
                await fill.wait_for(min(pos + HASH_STEP, fill.size) - 1)
                end = fill.available(pos)
            hashing = asyncio.get_running_loop().run_in_executor(None, _hash_range, fd, buffer, h, pos, end)
            await asyncio.shield(hashing)
            pos = end
        return Digest(h.hexdigest())
    finally:
        if hashing is None or hashing.done():
            os.close(fd)
        else:
            hashing.add_done_callback(lambda _: os.close(fd))


def _hash_range(fd: int, buffer: memoryview, h: hashlib._Hash, start: int, end: int) -> None:
    while start < end:
        n = os.preadv(fd, [buffer[: min(len(buffer), end - start)]], start)
        if n == 0:
            raise FillError(f"the partial file ended at {start} of {end} bytes")
        h.update(buffer[:n])
        start += n


def _encode(segments: list[Segment]) -> str:
    return json.dumps([[s.offset, s.length, s.done] for s in segments])


def _parse_segments(encoded: str, recorded_size: int, size: int) -> list[Segment] | None:
    """The saved layout if it is well-formed and covers exactly [0, size); else None."""
    try:
        segments = [Segment(int(o), int(n), min(max(int(d), 0), int(n))) for o, n, d in json.loads(encoded)]
    except (ValueError, TypeError):
        return None
    offset = 0
    for seg in segments:
        if seg.offset != offset or seg.length <= 0:
            return None
        offset = seg.end
    return segments if recorded_size == size and offset == size else None


def _first(group: BaseExceptionGroup) -> BaseException:
    """The error that stopped a segment (siblings only report their cancellation)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _allocate(path: Path, size: int) -> None:
    """A fresh sparse partial file of the final size, so segments can be written at their offsets.

    A new inode, never a truncation: a reader of an earlier, failed fill may still hold the old one.
    """
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)

