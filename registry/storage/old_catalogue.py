"""Moving the catalogue from its old default place, beside the models root, into the models root.

Until the catalogue moved inside the models root, every models folder under one parent shared
`<parent>/corral.db`, and a server on one folder reconciled the catalogue against its own files,
dropping the rows of the other's. An install upgraded from then keeps its catalogue: the first
start moves the old file in. It happens once, only while the new file does not exist, and never
to a database that a current corral already uses by name (CORRAL_DATABASE_URL): such a file has
the `catalogue_owner` table, which only a current corral creates, and a current corral using the
default would have moved the file in before migrating it.

The companions (`-wal`, `-shm`, `-journal`) move first and the database last: the new database
file appearing is what ends the adoption, so a crash halfway leaves the rest to the next start.
Across filesystems a file is copied to a temporary name, synced, and renamed into place.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
from pathlib import Path

from registry.storage.db import CatalogueOwner

log = logging.getLogger("corral")

COMPANIONS = ("-wal", "-shm", "-journal")


def adopt_old_catalogue(models: Path, database: Path) -> Path | None:
    """Move `<models>/../<database name>` to `database` if that is still to do; return the old path."""
    old = models.parent / database.name
    if database.exists() or not old.is_file():
        return None
    try:
        in_use = _used_by_current_corral(old)
    except sqlite3.DatabaseError as exc:
        log.warning("not moving %s into the models folder: it is not a readable catalogue (%s)", old, exc)
        return None
    if in_use:
        log.info("not moving %s into the models folder: another corral server names it in CORRAL_DATABASE_URL",
                 old)
        return None
    database.parent.mkdir(parents=True, exist_ok=True)
    for suffix in COMPANIONS:
        companion = old.with_name(old.name + suffix)
        if companion.exists():
            _move(companion, database.with_name(database.name + suffix))
    _move(old, database)
    log.info("moved the catalogue from its old place %s into the models folder: %s", old, database)
    return old


def _used_by_current_corral(path: Path) -> bool:
    """Read-only, so that looking neither checkpoints nor removes the companions about to move."""
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (CatalogueOwner.__tablename__,)).fetchone()
    conn.close()
    return found is not None


def _move(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    partial = target.with_name(target.name + ".moving")
    with open(source, "rb") as src, open(partial, "wb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(partial, target)
    source.unlink()
