"""Copying the catalogue from its old default place, beside the models root, into the models root.

Until the catalogue moved inside the models root, every models folder under one parent shared
`<parent>/corral.db`, and a server on one folder reconciled the catalogue against its own files,
dropping the rows of the other's. An install upgraded from then keeps its catalogue: the first
start of each models folder copies the old file in. A copy, not a move, because the old file may
serve several folders: each gets the rows it had, and its reconcile drops only the rows of blobs
that folder does not hold. It happens once per folder, only while the new file does not exist,
and never from a database that a current corral uses by name (CORRAL_DATABASE_URL): such a file
has the `catalogue_owner` table, which only a current corral creates.

The copy is SQLite's online backup (a consistent snapshot that includes what is still only in the
old file's WAL), written to a temporary name, synced, and renamed into place: the new database
appearing is what ends the adoption, so a crash halfway leaves it to the next start.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from registry.storage.db import CatalogueOwner

log = logging.getLogger("corral")


def adopt_old_catalogue(models: Path, database: Path) -> Path | None:
    """Copy `<models>/../<database name>` to `database` if that is still to do; return the old path."""
    old = models.parent / database.name
    if database.exists() or not old.is_file():
        return None
    try:
        in_use = _used_by_current_corral(old)
    except sqlite3.DatabaseError as exc:
        log.warning("not copying %s into the models folder: it is not a readable catalogue (%s)", old, exc)
        return None
    if in_use:
        log.info("not copying %s into the models folder: another corral server names it in CORRAL_DATABASE_URL",
                 old)
        return None
    database.parent.mkdir(parents=True, exist_ok=True)
    partial = database.with_name(database.name + ".copying")
    partial.unlink(missing_ok=True)
    _snapshot(old, partial)
    os.replace(partial, database)
    log.info("copied the catalogue from its old place %s into the models folder: %s (the old file is no longer "
             "used by this folder; remove it once every models folder beside it has started once)", old, database)
    return old


def _used_by_current_corral(path: Path) -> bool:
    """Read-only: looking must not change a file another server may be using."""
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (CatalogueOwner.__tablename__,)).fetchone()
    conn.close()
    return found is not None


def _snapshot(source: Path, target: Path) -> None:
    """A consistent copy of `source`, even while an old corral still writes it, made durable."""
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    with open(target, "rb") as copied:
        os.fsync(copied.fileno())
