"""The catalogue's old default place beside the models root: copied inside once per models folder, never
taken from a current server."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
from alembic import command

from registry.storage.db import alembic_config
from registry.storage.old_catalogue import adopt_old_catalogue


def url_for(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def migrate(path: Path, revision: str = "head") -> None:
    command.upgrade(alembic_config(url_for(path)), revision)


def old_catalogue(path: Path) -> None:
    """A catalogue as the last version before the move left it (schema 0003), one tag in its WAL."""
    migrate(path, "0003")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO manifests (digest, media_type, raw, created_at) VALUES ('sha256:m', 't', x'7b7d', 1)")
    conn.execute("INSERT INTO tags (name_key, host, namespace, model, tag, manifest_digest, created_at, "
                 "modified_at, pinned) VALUES ('h/l/m:latest', 'h', 'l', 'm', 'latest', 'sha256:m', 1, 1, 0)")
    conn.commit()
    # Left open on purpose until the copy is made: a crash leaves the rows only in the -wal file.
    snapshot = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}
    conn.close()
    for name, data in snapshot.items():
        (path.parent / name).write_bytes(data)


def tag_names(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name_key FROM tags")]
    conn.close()
    return names


def test_the_old_default_is_copied_in_with_its_wal_and_says_so(tmp_path: Path, caplog) -> None:
    models = tmp_path / "models"
    old = tmp_path / "corral.db"
    old_catalogue(old)
    assert (tmp_path / "corral.db-wal").exists()
    caplog.set_level("INFO", logger="corral")
    assert adopt_old_catalogue(models, models / "corral.db") == old
    assert tag_names(models / "corral.db") == ["h/l/m:latest"]  # the rows only in the -wal came along
    assert sorted(p.name for p in models.iterdir()) == ["corral.db"]  # no temporary copy left
    assert tag_names(old) == ["h/l/m:latest"]  # the old file stays for any other folder beside it
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"copied the catalogue from its old place {old} into the models folder: "
                              f"{models / 'corral.db'}")


def test_every_models_folder_beside_the_old_file_gets_its_own_copy(tmp_path: Path) -> None:
    old_catalogue(tmp_path / "corral.db")
    for folder in ("a", "b"):
        models = tmp_path / folder
        assert adopt_old_catalogue(models, models / "corral.db") == tmp_path / "corral.db"
        assert tag_names(models / "corral.db") == ["h/l/m:latest"]
    assert adopt_old_catalogue(tmp_path / "a", tmp_path / "a" / "corral.db") is None  # once per folder


def test_nothing_moves_once_the_new_catalogue_exists(tmp_path: Path) -> None:
    models = tmp_path / "models"
    old_catalogue(tmp_path / "corral.db")
    models.mkdir()
    (models / "corral.db").write_bytes(b"")
    assert adopt_old_catalogue(models, models / "corral.db") is None
    assert (tmp_path / "corral.db").exists() and (models / "corral.db").read_bytes() == b""


def test_a_catalogue_a_current_server_names_is_not_taken(tmp_path: Path) -> None:
    """A current corral with CORRAL_DATABASE_URL=<parent>/corral.db has migrated it to the owner table."""
    models = tmp_path / "models"
    migrate(tmp_path / "corral.db")
    assert adopt_old_catalogue(models, models / "corral.db") is None
    assert (tmp_path / "corral.db").exists() and not models.exists()


def test_a_file_that_is_no_catalogue_is_left_alone(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (tmp_path / "corral.db").write_bytes(b"not a database at all, just bytes" * 100)
    assert adopt_old_catalogue(models, models / "corral.db") is None
    assert (tmp_path / "corral.db").exists() and not models.exists()


def test_a_models_root_on_another_filesystem_gets_its_copy(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test's")
    old_catalogue(tmp_path / "corral.db")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        models = Path(other) / "models"
        models.mkdir()
        mounted = tmp_path / "models"  # stands for a models root that is another filesystem's mount point
        mounted.symlink_to(models, target_is_directory=True)
        assert adopt_old_catalogue(mounted, mounted / "corral.db") == tmp_path / "corral.db"
        assert tag_names(models / "corral.db") == ["h/l/m:latest"]
        assert sorted(p.name for p in models.iterdir()) == ["corral.db"]
