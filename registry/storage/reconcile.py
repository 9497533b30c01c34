"""Startup reconciliation: make the blobs directory and the catalogue agree before serving.

The database is the source of truth (pruning and deletion remove rows first, then files), so
after a crash the disk may hold more than the catalogue says, rarely less:

* a verified row whose file is gone → the row is dropped; a model that needs the blob is fetched
  again through the mirror on its next pull;
* a file with no verified row that some manifest (or an unfinished fill) needs → re-hashed and
  adopted when it matches its name (a fill that published its file but died before recording
  it), quarantined when it does not;
* any other file with no verified row → deleted (the files of a committed eviction or delete
  that a crash interrupted), unless OLLAMA_NOPRUNE;
* `-partial` files: kept while a `fills` row records their progress, for the next request to
  resume; without one, or untouched for longer than ollama's one-hour grace, deleted with their
  row — unless OLLAMA_NOPRUNE, as in ollama; a `fills` row without its file is dropped;
* files a prune had renamed aside but not yet unlinked → deleted.

Runs before the server accepts requests; every fix is logged and the report is kept for
`/api/corral/status`.

In a cluster (`grace` given) other nodes share the folder and the catalogue and keep working
while one node reconciles, under the duty lock, when it takes up the duty and every hour after.
Their work looks like leftovers for a moment: a fill's partial file before its first checkpoint,
a blob published but not yet recorded, a row recorded for a file this host's view of a shared
filesystem does not show yet, a file renamed aside by their prune. So nothing touched within the
grace period (by its file's mtime or ctime, a row's creation, a fill's last checkpoint) counts as
a leftover; it is looked at again at the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.model.names import Digest
from registry.storage.catalog import Catalog
from registry.storage.db import BLOB_VERIFIED, Blob, FillProgress, ManifestLayer, Tag
from registry.storage.leases import discard, is_retired
from registry.storage.store import PARTIAL_SUFFIX, hash_file

log = logging.getLogger("corral.reconcile")

PARTIAL_GRACE = 3600.0  # ollama's layerPruneGracePeriod for -partial files
CLUSTER_GRACE = 3600.0  # in a cluster, what was touched this recently may be another node's work in progress


@dataclass
class ReconcileReport:
    dropped_rows: list[str] = field(default_factory=list)  # verified rows whose file was missing
    adopted: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    removed_orphans: list[str] = field(default_factory=list)
    kept_orphans: list[str] = field(default_factory=list)  # OLLAMA_NOPRUNE
    removed_partials: list[str] = field(default_factory=list)
    dropped_fills: list[str] = field(default_factory=list)
    removed_retired: int = 0
    incomplete_models: list[str] = field(default_factory=list)  # refetched on their next pull
    finished_at: float = 0.0

    @property
    def fixed(self) -> int:
        return (len(self.dropped_rows) + len(self.adopted) + len(self.quarantined) + len(self.removed_orphans)
                + len(self.removed_partials) + len(self.dropped_fills) + self.removed_retired)

    def summary(self) -> str:
        parts = [f"{len(v)} {k.replace('_', ' ')}" for k, v in asdict(self).items() if isinstance(v, list) and v]
        if self.removed_retired:
            parts.append(f"{self.removed_retired} retired files removed")
        return ", ".join(parts) or "disk and catalogue agree"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fixed": self.fixed, "summary": self.summary()}


@dataclass
class _Listing:
    blobs: dict[str, tuple[Path, float]]  # digest → (path, last touched: the later of mtime and ctime)
    partials: dict[str, tuple[Path, float, float]]  # digest → (path, mtime, last touched)
    retired: list[tuple[Path, float]]


def _scan(root: Path) -> _Listing:
    listing = _Listing({}, {}, [])
    for path in root.iterdir():
        name = path.name
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # removed since the listing (by this server, or another node)
        touched = max(st.st_mtime, st.st_ctime)
        if is_retired(path):
            listing.retired.append((path, touched))
        elif Digest.is_valid(name) and stat.S_ISREG(st.st_mode):
            listing.blobs[str(Digest.parse(name))] = (path, touched)
        elif name.endswith(PARTIAL_SUFFIX) and Digest.is_valid(name[: -len(PARTIAL_SUFFIX)]):
            listing.partials[str(Digest.parse(name[: -len(PARTIAL_SUFFIX)]))] = (path, st.st_mtime, touched)
    return listing


async def reconcile(catalog: Catalog, sessions: async_sessionmaker[AsyncSession], noprune: bool,
                    grace: float | None = None) -> ReconcileReport:
    """Make the store and the catalogue agree; with `grace` (cluster mode), leave alone whatever
    was touched within the last `grace` seconds, since another node may be in the middle of it."""
    store = catalog.store
    report = ReconcileReport()
    now = time.time()
    settled = now - grace if grace is not None else float("inf")  # touched before this: nobody's work in progress
    listing = await asyncio.to_thread(_scan, store.root)
    async with sessions() as s:
        blobs = {d: (state, created) for d, state, created in
                 (await s.execute(select(Blob.digest, Blob.state, Blob.created_at))).all()}
        fills = dict((await s.execute(select(FillProgress.digest, FillProgress.updated_at))).all())
        needed = set((await s.execute(select(ManifestLayer.blob_digest))).scalars())
    states = {d: state for d, (state, _) in blobs.items()}

    report.dropped_rows = [d for d, (state, created) in blobs.items()
                           if state == BLOB_VERIFIED and d not in listing.blobs and created < settled]
    if report.dropped_rows:
        async with sessions.begin() as s:
            await s.execute(delete(Blob).where(Blob.digest.in_(report.dropped_rows)))
    for digest in report.dropped_rows:
        log.warning("reconcile: %s is listed but its file is missing; dropped the row (fetched again on demand)",
                    digest)

    for digest, (path, touched) in sorted(listing.blobs.items()):
        if states.get(digest) == BLOB_VERIFIED or touched >= settled:
            continue  # recorded, or published a moment ago (by another node, which records it next)
        if digest in needed or digest in fills:
            await _adopt(catalog, Digest.parse(digest), path, report)
        elif noprune:
            report.kept_orphans.append(digest)
        else:
            await asyncio.to_thread(discard, path)
            report.removed_orphans.append(digest)
            log.info("reconcile: removed %s, a file no model references and the catalogue does not list", digest)

    verified = {d for d, state in states.items() if state == BLOB_VERIFIED} - set(report.dropped_rows)
    verified |= set(report.adopted)
    stale: list[str] = []
    for digest, (path, mtime, touched) in sorted(listing.partials.items()):
        if touched >= settled:
            continue  # another node's fill, running now
        if digest in verified:
            reason = "the blob is complete"
        elif noprune:
            continue
        elif digest not in fills:
            reason = "no record of its progress"
        elif now - mtime > PARTIAL_GRACE:
            reason = f"untouched for {(now - mtime) / 3600:.1f}h"
        else:
            continue
        await asyncio.to_thread(discard, path)
        report.removed_partials.append(digest)
        stale.append(digest)
        log.info("reconcile: removed partial file of %s (%s)", digest, reason)
    unfiled = {d for d, updated in fills.items() if d not in listing.partials and updated < settled}
    report.dropped_fills = sorted(unfiled | (set(fills) & set(stale)))
    if report.dropped_fills:
        async with sessions.begin() as s:
            await s.execute(delete(FillProgress).where(FillProgress.digest.in_(report.dropped_fills)))

    retired = [path for path, touched in listing.retired if touched < settled]
    for path in retired:
        await asyncio.to_thread(discard, path)
    report.removed_retired = len(retired)

    report.incomplete_models = await _incomplete_models(sessions)
    report.finished_at = time.time()
    if report.fixed or report.kept_orphans or report.incomplete_models:
        log.info("reconcile: %s", report.summary())
    return report


async def _adopt(catalog: Catalog, digest: Digest, path: Path, report: ReconcileReport) -> None:
    actual, size = await hash_file(path)
    if actual == digest:
        info = await catalog.layer_info(digest)
        await catalog.record_blob(digest, size, media_type=info[1] if info else None)
        report.adopted.append(str(digest))
        log.info("reconcile: adopted %s, complete and verified but not yet recorded", digest)
    else:
        await catalog.quarantine_blob(digest)
        report.quarantined.append(str(digest))
        log.warning("reconcile: %s does not hash to its name (got %s); quarantined", digest, actual)


async def _incomplete_models(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    verified = select(Blob.digest).where(Blob.state == BLOB_VERIFIED)
    async with sessions() as s:
        rows = (await s.execute(
            select(Tag.host, Tag.namespace, Tag.model, Tag.tag).distinct()
            .join(ManifestLayer, ManifestLayer.manifest_digest == Tag.manifest_digest)
            .where(ManifestLayer.blob_digest.not_in(verified))
        )).all()
    return sorted(f"{host}/{ns}/{model}:{tag}" for host, ns, model, tag in rows)
