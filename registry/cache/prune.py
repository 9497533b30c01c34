"""Byte quota with least-recently-used eviction of whole models, and garbage collection of blobs.

When the store holds more than CORRAL_CACHE_HIGH_WATERMARK × the quota, models (tags) are
evicted in order of last use (a pull or a run; the fetch or creation time for a model never used)
until it holds at most the low watermark. The quota is CORRAL_MAX_CACHE, and never more than the
store's filesystem can hold (what the store occupies plus the free space, less what running fills
have still to write): with no quota set, the disk is the quota, so the cache never fills it.
Usage counts verified blobs plus the full size of fills in progress, so room is made while a big
fill runs rather than after the disk is full.
Never evicted: pinned tags, tags matching CORRAL_KEEP (globs) or listed in CORRAL_SYNC, and a
tag whose eviction would delete a blob that is being read (a lease), filled, or is loaded in the
runner. A tag whose blobs are all held by such models is skipped too: evicting it frees nothing.
The background check runs every CHECK_INTERVAL and as soon as a fill starts or ends.

Each eviction is one transaction — the tag, its manifest if no other tag uses it, and the blob
rows no manifest references any more — and only after the commit are the files removed (rows
first, then files, as `Catalog.collect_garbage` does). A crash at any point leaves every model
either whole or gone in the database; the files of a committed eviction that were not yet
removed are orphans that startup reconciliation deletes, so the disk follows the database.

Each run also collects what no model needs: untagged manifests (left by pulls by digest) and
unreferenced blobs idle for longer than ORPHAN_GRACE (ollama's one-hour grace, which keeps an
uploaded blob alive until the `/api/create` that uses it), unless OLLAMA_NOPRUNE is set; and
quarantined files older than QUARANTINE_RETENTION. Pruning never blocks serving: database work
is async, files are renamed aside on the event loop and unlinked in a thread.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.cache.counters import CacheCounters, Usage
from registry.config import Settings
from registry.mirror.fills import DISK_HEADROOM, InFlight
from registry.model.names import Digest, InvalidNameError, ModelName
from registry.storage.catalog import Catalog
from registry.storage.db import BLOB_VERIFIED, Blob, FillProgress, Manifest, ManifestLayer, Tag
from registry.storage.leases import discard, inode_of
from registry.storage.store import QUARANTINE_DIR
from registry.units import format_byte_size

log = logging.getLogger("corral.prune")

CHECK_INTERVAL = 10.0  # seconds between usage checks of the background pruner
FILL_POLL = 1.0  # how often it looks (in memory, no query) whether fills started or ended
ORPHAN_GRACE = 3600.0  # ollama's layerPruneGracePeriod
ORPHAN_SWEEP = 3600.0  # how often the background pruner collects orphans when under quota
QUARANTINE_RETENTION = 7 * 86400.0
QUOTA_WARNING_INTERVAL = 600.0  # an unattainable quota is logged this often, not at every check

Event = dict[str, Any]


async def measure_usage(sessions: async_sessionmaker[AsyncSession], in_flight: InFlight) -> Usage:
    """Verified blob bytes, plus the full size of each running fill (known in memory from its
    first moment, before its progress row exists) and the bytes so far of each paused one."""
    running = {str(d): fill.size for d in in_flight.digests() if (fill := in_flight.get(d)) is not None}
    async with sessions() as s:
        stored = (await s.execute(select(func.coalesce(func.sum(Blob.size), 0))
                                  .where(Blob.state == BLOB_VERIFIED))).scalar_one()
        paused = (await s.execute(select(FillProgress.segments)
                                  .where(FillProgress.digest.not_in(list(running))))).scalars().all()
    return Usage(int(stored), sum(running.values()) + sum(_done(segments) for segments in paused))


def _done(segments: str) -> int:
    try:
        return sum(int(seg[2]) for seg in json.loads(segments))
    except (ValueError, TypeError, IndexError):
        return 0


class KeepList:
    """CORRAL_KEEP patterns and CORRAL_SYNC names: models the operator wants to stay.

    A pattern without glob characters is a model name with ollama's defaults (`gemma3` is
    `registry.ollama.ai/library/gemma3:latest`); a glob is matched, case-insensitively, against
    both the full name and the shortest display form (`llama3.2:*`, `*/library/qwen*`).
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.names: dict[str, str] = {}
        self.globs: list[str] = []
        for pattern in patterns:
            if any(c in pattern for c in "*?["):
                self.globs.append(pattern)
                continue
            try:
                self.names[ModelName.parse(pattern).key] = pattern
            except InvalidNameError:
                log.warning("ignoring keep-list entry %r: not a model name", pattern)

    def match(self, name: ModelName) -> str | None:
        """The entry that keeps `name`, or None."""
        if name.key in self.names:
            return self.names[name.key]
        spellings = (str(name).lower(), name.display_shortest().lower())
        for glob in self.globs:
            if any(fnmatch.fnmatchcase(s, glob.lower()) for s in spellings):
                return glob
        return None


@dataclass(frozen=True)
class TagInfo:
    name: ModelName
    manifest: str
    last_used: float
    pinned: bool


@dataclass(frozen=True)
class Eviction:
    tag: TagInfo
    blobs: tuple[str, ...]  # every blob of its manifest; which go is decided again at commit
    frees: int  # bytes the plan expects to free


@dataclass
class Plan:
    usage: Usage
    quota: int
    high: int
    low: int
    disk_bound: bool  # the quota is what the disk can hold (less than CORRAL_MAX_CACHE, or none set)
    evictions: list[Eviction] = field(default_factory=list)
    kept: list[tuple[TagInfo, str]] = field(default_factory=list)
    orphan_manifests: list[str] = field(default_factory=list)
    orphan_blobs: list[tuple[str, int, float]] = field(default_factory=list)  # digest, size, idle seconds
    expired_quarantine: list[Path] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return self.usage.total > self.high

    @property
    def short_by(self) -> int:
        """Bytes still above the low watermark after the planned evictions."""
        return max(0, self.usage.total - sum(e.frees for e in self.evictions) - self.low) if self.over else 0


class Pruner:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        in_flight: InFlight,
        loaded_paths: Callable[[], Iterable[Path]],
        counters: CacheCounters,
        *,
        interval: float = CHECK_INTERVAL,
        poll: float = FILL_POLL,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.sessions = catalog.sessions
        self.store = catalog.store
        self.in_flight = in_flight
        self.leases = catalog.leases
        self.loaded_paths = loaded_paths
        self.counters = counters
        self.keep = KeepList((*settings.keep, *settings.sync))
        self.interval = interval
        self.poll = poll
        self.last_run: Event | None = None  # the summary of the last run, for the status page
        self._lock = asyncio.Lock()
        self._last_sweep = 0.0
        self._warned = -QUOTA_WARNING_INTERVAL

    # ---- what is protected -----------------------------------------------------------------

    def loaded_blobs(self) -> set[str]:
        """The blobs the runner has loaded."""
        return {str(Digest.parse(Path(p).name)) for p in self.loaded_paths()
                if Path(p).parent == self.store.root and Digest.is_valid(Path(p).name)}

    async def busy_blobs(self, s: AsyncSession) -> dict[str, str]:
        """Blobs that must stay right now, with the reason: being read, filled, or loaded, here or
        (in a cluster) on another live node. Read in the transaction that deletes, after it has
        locked the blob rows, so a node publishing a lease at the same moment is seen or finds the
        blob gone (`storage.cluster_leases`)."""
        busy: dict[str, str] = dict.fromkeys(self.loaded_blobs(), "loaded in the runner")
        for digest in self.in_flight.digests():
            busy[str(digest)] = "being filled"
        for digest in self.leases.held():
            busy.setdefault(str(digest), "being read")
        for digest in await self.leases.held_elsewhere(s):
            busy.setdefault(digest, "in use on another node")
        return busy

    def protection(self, tag: TagInfo) -> str | None:
        """Why `tag` is never evicted by the operator's choice (pin, keep-list), or None."""
        if tag.pinned:
            return "pinned"
        entry = self.keep.match(tag.name)
        return f"kept by {entry!r}" if entry is not None else None

    # ---- planning ----------------------------------------------------------------------------

    async def measure(self) -> Usage:
        usage = await measure_usage(self.sessions, self.in_flight)
        self.counters.usage = usage
        return usage

    async def quota(self, usage: Usage) -> tuple[int, bool]:
        """The quota in force, and whether the disk sets it: CORRAL_MAX_CACHE capped by what the
        store's filesystem can hold."""
        free = await asyncio.to_thread(self.store.free_space)
        room = max(usage.total - self.in_flight.unwritten_bytes() + free - DISK_HEADROOM, 0)
        configured = self.settings.max_cache
        return (configured, False) if 0 < configured <= room else (room, True)

    async def run_to_end(self) -> None:
        """One prune, carried out without anyone reading its events (the background check, and a
        fill that would not fit on the disk)."""
        async for _ in self.run():
            pass

    async def plan(self) -> Plan:
        """What a run would do now, from one snapshot of the catalogue."""
        usage = await self.measure()
        quota, disk_bound = await self.quota(usage)
        plan = Plan(usage, quota, int(quota * self.settings.high_watermark), int(quota * self.settings.low_watermark),
                    disk_bound)
        now = time.time()
        async with self.sessions() as s:
            tags = [
                TagInfo(ModelName(t.host, t.namespace, t.model, t.tag), t.manifest_digest,
                        t.last_used or t.fetched_at or t.modified_at, t.pinned)
                for t in (await s.execute(select(Tag))).scalars()
            ]
            links = (await s.execute(select(ManifestLayer.manifest_digest, ManifestLayer.blob_digest))).all()
            blobs = {d: (size, last) for d, size, last in (await s.execute(
                select(Blob.digest, Blob.size, Blob.last_access).where(Blob.state == BLOB_VERIFIED))).all()}
            manifests = dict((await s.execute(select(Manifest.digest, Manifest.created_at))).all())
        layers: dict[str, set[str]] = defaultdict(set)
        for manifest, blob in links:
            layers[manifest].add(blob)
        tagged = {t.manifest for t in tags}
        refs: Counter[str] = Counter()
        for t in tags:
            refs.update(layers[t.manifest])
        for manifest in manifests.keys() - tagged:
            refs.update(layers[manifest])  # an untagged manifest holds its blobs until it is collected
        async with self.sessions() as s:
            busy = await self.busy_blobs(s)
        candidates: list[TagInfo] = []
        held: set[str] = set()  # blobs that stay whatever is evicted
        for t in tags:
            reason = self.protection(t)
            if reason is None:
                candidates.append(t)
            else:
                plan.kept.append((t, reason))
                held |= layers[t.manifest]
        if plan.over:
            remaining = usage.total
            for t in sorted(candidates, key=lambda t: t.last_used):
                if remaining <= plan.low:
                    break
                mine = layers[t.manifest]
                if mine <= held:
                    continue  # everything it uses stays anyway: evicting it frees nothing
                refs.subtract(mine)
                gone = {b for b in mine if refs[b] <= 0}
                reason = in_use(gone, busy)
                if reason is not None:
                    refs.update(mine)
                    held |= mine
                    plan.kept.append((t, reason))
                    continue
                frees = sum(blobs[b][0] for b in gone if b in blobs)
                plan.evictions.append(Eviction(t, tuple(sorted(mine)), frees))
                remaining -= frees
        if not self.settings.noprune:
            plan.orphan_manifests = [m for m in manifests.keys() - tagged if now - manifests[m] > ORPHAN_GRACE]
            linked = {b for m in manifests.keys() - set(plan.orphan_manifests) for b in layers[m]}
            plan.orphan_blobs = [(d, size, now - last) for d, (size, last) in blobs.items()
                                 if d not in linked and d not in busy and now - last > ORPHAN_GRACE]
        plan.expired_quarantine = await asyncio.to_thread(self._expired_quarantine, now)
        return plan

    def _expired_quarantine(self, now: float) -> list[Path]:
        qdir = self.store.root.parent / QUARANTINE_DIR
        try:
            entries = list(qdir.iterdir())
        except FileNotFoundError:
            return []
        return [p for p in entries if p.is_file() and now - p.stat().st_mtime > QUARANTINE_RETENTION]

    # ---- running -----------------------------------------------------------------------------

    async def run(self, dry_run: bool = False) -> AsyncIterator[Event]:
        """Plan and (unless `dry_run`) carry out one prune, yielding what happens and why."""
        async with self._lock:
            plan = await self.plan()
            yield _plan_event(plan)
            if plan.over:
                for tag, reason in plan.kept:
                    yield {"status": "keep", "model": tag.name.display_shortest(), "reason": reason}
            evicted = freed = 0
            for eviction in plan.evictions:
                if dry_run:
                    gone = eviction.frees
                else:
                    outcome = await self._evict(eviction)
                    if isinstance(outcome, str):
                        yield {"status": "skip", "model": eviction.tag.name.display_shortest(), "reason": outcome}
                        continue
                    gone = outcome
                evicted += 1
                freed += gone
                yield {"status": "evict", "model": eviction.tag.name.display_shortest(), "frees": gone,
                       "last_used": eviction.tag.last_used, "reason": _lru_reason(eviction)}
            if plan.over and plan.short_by:
                reason = (f"still {format_byte_size(plan.short_by)} above the low watermark: the rest is pinned, "
                          "kept or in use")
                if not dry_run and time.monotonic() - self._warned > QUOTA_WARNING_INTERVAL:
                    self._warned = time.monotonic()
                    log.warning("quota cannot be met: %s", reason)
                yield {"status": "warning", "reason": reason}
            for digest in plan.orphan_manifests:
                yield {"status": "collect", "manifest": digest, "reason": "untagged manifest older than 1h"}
            collected = 0 if dry_run else await self._collect(plan)
            for digest, size, idle in plan.orphan_blobs:
                yield {"status": "collect", "digest": digest, "frees": size,
                       "reason": f"referenced by no model, unused for {_ago(idle)}"}
            freed += collected if not dry_run else sum(size for _, size, _ in plan.orphan_blobs)
            for path in plan.expired_quarantine:
                if not dry_run:
                    await asyncio.to_thread(discard, path)
                yield {"status": "collect", "path": f"{QUARANTINE_DIR}/{path.name}",
                       "reason": "quarantined more than 7 days ago"}
            self._last_sweep = time.time()
            summary = {"status": "success", "dry_run": dry_run, "evicted": evicted, "freed": freed,
                       "usage": (await self.measure()).total if not dry_run else plan.usage.total - freed,
                       "quota": plan.quota, "finished_at": time.time()}
            if not dry_run:
                self.last_run = summary
                if evicted or freed:
                    log.info("prune: evicted %d models, freed %s; %s in use of %s", evicted,
                             format_byte_size(freed), format_byte_size(summary["usage"]), format_byte_size(plan.quota))
            yield summary

    async def _evict(self, eviction: Eviction) -> int | str:
        """Remove one tag in one transaction; return bytes freed, or why it was skipped.

        The transaction rolls back when a blob it would delete has become busy since the plan
        (a reader started on the model, the runner loaded it): the model stays whole.
        """
        tag = eviction.tag
        inodes = {d: inode_of(self.store.path(Digest.parse(d))) for d in eviction.blobs}
        try:
            async with self.sessions.begin() as s:
                row = (await s.execute(select(Tag).where(Tag.name_key == tag.name.key))).scalar_one_or_none()
                if row is None or row.manifest_digest != tag.manifest or row.pinned:
                    return "changed since the plan (re-tagged, pinned or deleted)"
                await s.delete(row)
                await s.flush()
                if (await s.execute(select(func.count()).select_from(Tag)
                                    .where(Tag.manifest_digest == tag.manifest))).scalar_one() == 0:
                    await s.execute(delete(ManifestLayer).where(ManifestLayer.manifest_digest == tag.manifest))
                    await s.execute(delete(Manifest).where(Manifest.digest == tag.manifest))
                doomed = await _unreferenced(s, eviction.blobs)
                reason = in_use(doomed, await self.busy_blobs(s))
                if reason is not None:
                    raise _InUse(reason)
        except _InUse as exc:
            return str(exc)
        freed = await self._remove_files(doomed, inodes)
        self.counters.evictions += 1
        self.counters.pruned_bytes += freed
        log.info("evicted %s (last used %s ago), freed %s", tag.name.display_shortest(),
                 _ago(time.time() - tag.last_used), format_byte_size(freed))
        return freed

    async def _collect(self, plan: Plan) -> int:
        """Delete the planned orphans (rechecked in the transaction); return bytes freed."""
        if not plan.orphan_manifests and not plan.orphan_blobs:
            return 0
        candidates = tuple(d for d, _, _ in plan.orphan_blobs)
        inodes = {d: inode_of(self.store.path(Digest.parse(d))) for d in candidates}
        async with self.sessions.begin() as s:
            untagged = select(Manifest.digest).where(Manifest.digest.in_(plan.orphan_manifests),
                                                     Manifest.digest.not_in(select(Tag.manifest_digest)))
            gone = list((await s.execute(untagged)).scalars())
            if gone:
                await s.execute(delete(ManifestLayer).where(ManifestLayer.manifest_digest.in_(gone)))
                await s.execute(delete(Manifest).where(Manifest.digest.in_(gone)))
            await s.execute(select(Blob.digest).where(Blob.digest.in_(candidates)).with_for_update())
            busy = await self.busy_blobs(s)
            doomed = await _unreferenced(s, [d for d in candidates if d not in busy])
        freed = await self._remove_files(doomed, inodes)
        self.counters.pruned_bytes += freed
        return freed

    async def _remove_files(self, doomed: dict[str, int], inodes: dict[str, int | None]) -> int:
        """After the commit: retire each file (deferred while read), unlink off the event loop."""
        for digest in doomed:
            await self.catalog.remove_file(Digest.parse(digest), inodes.get(digest))
        return sum(doomed.values())

    # ---- background ------------------------------------------------------------------------

    async def loop(self) -> None:
        """Check usage every `interval` and whenever the set of running fills changes; prune when
        over the high watermark, and collect orphans at least every ORPHAN_SWEEP."""
        seen: frozenset[Digest] | None = None
        due = 0.0
        while True:
            active = frozenset(self.in_flight.digests())
            if active != seen or time.monotonic() >= due:
                seen, due = active, time.monotonic() + self.interval
                try:
                    usage = await self.measure()
                    quota, _ = await self.quota(usage)
                    over = usage.total > quota * self.settings.high_watermark
                    if over or time.time() - self._last_sweep > ORPHAN_SWEEP:
                        await self.run_to_end()
                except Exception:
                    log.exception("background prune failed; trying again in %.0fs", self.interval)
            await asyncio.sleep(self.poll)


class _InUse(Exception):
    """Raised inside an eviction's transaction to roll it back."""


def in_use(blobs: Iterable[str], busy: dict[str, str]) -> str | None:
    """Why deleting `blobs` must wait: the first one that is being read, filled or is loaded."""
    for digest in sorted(blobs):
        if digest in busy:
            return f"in use: {Digest.parse(digest).short} is {busy[digest]}"
    return None


async def _unreferenced(s: AsyncSession, candidates: Iterable[str]) -> dict[str, int]:
    """Delete the rows of the candidate blobs no manifest links any more; return their sizes."""
    candidates = list(candidates)
    if not candidates:
        return {}
    linked = select(ManifestLayer.blob_digest).where(ManifestLayer.blob_digest.in_(candidates))
    rows = (await s.execute(select(Blob.digest, Blob.size, Blob.state)
                            .where(Blob.digest.in_(candidates), Blob.digest.not_in(linked)))).all()
    if rows:
        await s.execute(delete(Blob).where(Blob.digest.in_([d for d, _, _ in rows])))
    return {d: size if state == BLOB_VERIFIED else 0 for d, size, state in rows}


def _plan_event(plan: Plan) -> Event:
    source = " (all the disk can hold)" if plan.disk_bound else ""
    message = (f"{format_byte_size(plan.usage.total)} in use of {format_byte_size(plan.quota)}{source}; "
               + (f"over the high watermark ({format_byte_size(plan.high)}), evicting least recently used "
                  f"models down to {format_byte_size(plan.low)}" if plan.over
                  else f"under the high watermark ({format_byte_size(plan.high)})"))
    return {"status": "plan", "usage": plan.usage.total, "stored": plan.usage.stored,
            "filling": plan.usage.filling, "quota": plan.quota, "disk_bound": plan.disk_bound,
            "high": plan.high, "low": plan.low, "over": plan.over, "reason": message}


def _lru_reason(eviction: Eviction) -> str:
    return (f"least recently used (last used {_ago(time.time() - eviction.tag.last_used)} ago) "
            f"while over quota; frees {format_byte_size(eviction.frees)}")


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
