"""Leases: which blobs are being read right now, so pruning and scrub never pull one from under a reader.

An in-process reference count per digest, cheap enough to take on every blob response. A reader
takes its lease in the same step as its last check that the blob is servable (no await in
between), so a prune either sees the lease or the reader sees the blob gone. Pruning consults
`held()` when it chooses victims, and deletes a file through `retire`: when a lease was taken
after the prune deleted the blob's row, the file is retired once the last reader is done.
Retiring renames the file out of the way at once (cheap, on the event loop, so no reader can
start on it afterwards) and leaves the slow part, freeing a large file's extents, to a thread.
A path that no longer names the inode the prune decided to delete is a fresh copy a new fill
published in the meantime, and is left alone.

Nothing here touches the database: a crash loses the leases together with the readers they
protected, and a file retired but not yet unlinked (or never retired) is an orphan that startup
reconciliation removes. In a cluster, `storage.cluster_leases` adds what the other nodes hold:
`publish`, `sync` and `held_elsewhere` are the hooks it fills in; here they cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from registry.model.names import Digest

log = logging.getLogger("corral.leases")

RETIRED_MARKER = "-retired-"


class Lease:
    """One reader's claim on one blob; `release` is idempotent."""

    def __init__(self, leases: Leases, digest: Digest) -> None:
        self._leases = leases
        self.digest = digest
        self._held = True

    async def publish(self) -> None:
        """Tell the other nodes of a cluster, before the first byte is read."""
        if self._held:
            await self._leases.publish(self.digest)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._leases._release(self.digest)


class Leases:
    def __init__(self) -> None:
        self._counts: Counter[Digest] = Counter()
        self._deferred: dict[Digest, tuple[Path, int]] = {}  # digest → (path, inode) to unlink when free

    def acquire(self, digest: Digest) -> Lease:
        self._counts[digest] += 1
        return Lease(self, digest)

    @contextlib.contextmanager
    def hold(self, *digests: Digest) -> Iterator[None]:
        leases = [self.acquire(d) for d in dict.fromkeys(digests)]
        try:
            yield
        finally:
            for lease in leases:
                lease.release()

    def held(self) -> set[Digest]:
        return set(self._counts)

    async def publish(self, *digests: Digest) -> None:
        """Make leases this process holds on `digests` known to the other nodes of a cluster."""

    async def sync(self, loaded: set[str]) -> None:
        """Bring what the other nodes see in line with what this process holds (and has `loaded`)."""

    async def held_elsewhere(self, session: AsyncSession) -> set[str]:
        """Digests other live nodes hold leases on; a single server has no other nodes."""
        return set()

    def retire(self, digest: Digest, path: Path, inode: int) -> Path | None:
        """Take `path` out of the store now if nobody reads `digest`, else after the last release.

        Returns the renamed file for the caller to unlink off the event loop, or None when there
        is nothing to unlink now (deferred, already gone, or replaced by a newer copy).
        """
        if self._counts.get(digest):
            self._deferred[digest] = (path, inode)
            return None
        return _rename_aside(path, inode)

    def _release(self, digest: Digest) -> None:
        self._counts[digest] -= 1
        if self._counts[digest] > 0:
            return
        del self._counts[digest]
        deferred = self._deferred.pop(digest, None)
        if deferred is None:
            return
        aside = _rename_aside(*deferred)
        if aside is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            discard(aside)  # released outside the loop (interpreter shutdown): do it inline
        else:
            loop.run_in_executor(None, discard, aside)


def inode_of(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def is_retired(path: Path) -> bool:
    """A file renamed aside by `retire` whose unlink a crash interrupted."""
    return RETIRED_MARKER in path.name


def discard(path: Path) -> None:
    """Unlink a retired file; blocking (run it in a thread)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def _rename_aside(path: Path, inode: int) -> Path | None:
    aside = path.with_name(f"{path.name}{RETIRED_MARKER}{secrets.token_hex(4)}")
    try:
        if path.stat().st_ino != inode:
            return None
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    return aside
