"""Database tables and the async engine.

The schema is owned by Alembic (`migrations/`): the application upgrades the database at startup
and never calls `metadata.create_all`, so an existing catalogue is always migrated in place.
Timestamps are Unix seconds (float, a double on PostgreSQL): portable across SQLite and
PostgreSQL without timezone surprises, and cheap to compare for TTLs and LRU ordering.

Two engines are supported: SQLite (aiosqlite, the embedded default) and PostgreSQL (asyncpg, the
`postgres` extra), which several servers can share. Everything dialect-specific lives here: the
SQLite connection pragmas, the PostgreSQL advisory lock that lets one server migrate at a time,
and `dialect_insert` for the upserts both spell `INSERT … ON CONFLICT`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import migrations

BLOB_VERIFIED = "verified"
BLOB_PARTIAL = "partial"
BLOB_QUARANTINED = "quarantined"

# PostgreSQL advisory lock keys (one bigint namespace per database): "corral" in ASCII, then a number.
MIGRATION_LOCK = 0x636F7272616C0001
DUTY_LOCK = 0x636F7272616C0002  # held by the one node of a cluster that runs the background work
UPLOAD_LOCKS = 0x636F7272  # the first key of the two-key advisory locks of push upload sessions (cluster mode)

log = logging.getLogger("corral.db")


class Base(DeclarativeBase):
    """Declarative base of corral's tables; Alembic compares migrations against its metadata."""


class Blob(Base):
    """A content-addressed file in the store. `state` says whether it may be served."""

    __tablename__ = "blobs"
    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default=BLOB_VERIFIED)
    created_at: Mapped[float] = mapped_column(Float)
    last_access: Mapped[float] = mapped_column(Float)
    checked_at: Mapped[float | None] = mapped_column(Float)  # last scrub re-hash; None = never


class Manifest(Base):
    """A manifest exactly as received or created: `raw` is served byte for byte."""

    __tablename__ = "manifests"
    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(255))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)


class ManifestLayer(Base):
    """Manifest → blob links (config included); reference counts are derived from these rows."""

    __tablename__ = "manifest_layers"
    manifest_digest: Mapped[str] = mapped_column(
        String(71), ForeignKey("manifests.digest", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_digest: Mapped[str] = mapped_column(String(71))
    media_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_manifest_layers_blob", "blob_digest"),)


class Tag(Base):
    """A model name pointing at a manifest. `name_key` is the case-folded name, unique."""

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name_key: Mapped[str] = mapped_column(String(600), unique=True)
    host: Mapped[str] = mapped_column(String(350))
    namespace: Mapped[str] = mapped_column(String(80))
    model: Mapped[str] = mapped_column(String(80))
    tag: Mapped[str] = mapped_column(String(80))
    manifest_digest: Mapped[str] = mapped_column(String(71), ForeignKey("manifests.digest"))
    created_at: Mapped[float] = mapped_column(Float)
    modified_at: Mapped[float] = mapped_column(Float)
    fetched_at: Mapped[float | None] = mapped_column(Float)
    last_used: Mapped[float | None] = mapped_column(Float)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    upstream: Mapped[str | None] = mapped_column(String(400))

    __table_args__ = (Index("ix_tags_manifest", "manifest_digest"),)


class FillProgress(Base):
    """An upstream fill in progress: where the blob comes from and how far each segment got.

    Written after the partial file's bytes are fsynced, so a restart (even after kill -9) resumes
    each segment from a byte count that is really on disk; the row goes when the fill ends.
    """

    __tablename__ = "fills"
    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(400))  # upstream base URL, scheme://host[:port]
    repository: Mapped[str] = mapped_column(String(200))
    segments: Mapped[str] = mapped_column(Text)  # JSON [[offset, length, done], ...]
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # In a cluster (`storage.fill_claims`): the node fetching the blob, and when it last said so.
    # A single server leaves both empty: its fills are its own.
    owner: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)


class VersionGate(Base):
    """What the upstream answered clients of each version for one tag (`mirror.version_gate`).

    registry.ollama.ai refuses a manifest (412 and a readable body) to clients older than the
    model needs; a cached tag must give an old client that same answer, not a model it cannot
    load. `passed_version` is the oldest client version the upstream gave `manifest_digest` to,
    `refused_version` the newest it refused, with the refusal kept verbatim. Versions are
    `major.minor.patch` text. Keyed like `tags.name_key`, with no link to it: what the upstream
    said holds whether or not the tag is cached.
    """

    __tablename__ = "version_gates"
    name_key: Mapped[str] = mapped_column(String(600), primary_key=True)
    manifest_digest: Mapped[str | None] = mapped_column(String(71))
    passed_version: Mapped[str | None] = mapped_column(String(32))
    refused_version: Mapped[str | None] = mapped_column(String(32))
    refused_status: Mapped[int | None] = mapped_column(Integer)
    refused_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    refused_type: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[float] = mapped_column(Float)


class CatalogueOwner(Base):
    """The one server writing this catalogue (`storage.owner`): a second one refuses to start.

    One row at most (`slot` is always 1, so two claims cannot both insert). `expires_at` is the
    owner's own promise of its next heartbeat, so a reader needs no knowledge of the owner's
    interval to tell a live owner from a crashed one.
    """

    __tablename__ = "catalogue_owner"
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner_id: Mapped[str] = mapped_column(String(32))  # random per server start
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    listen_url: Mapped[str] = mapped_column(String(400))
    models: Mapped[str] = mapped_column(Text)  # the owner's models root, resolved
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class Node(Base):
    """A server in cluster mode (`storage.nodes`): one row per running process, any number of them.

    `id` is random per start; `name` (CORRAL_NODE_NAME, the host name by default) is what an
    operator knows the node by, and what its lock in the shared models folder is named after.
    `expires_at` is the node's own promise of its next heartbeat, as for the catalogue owner.
    """

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    advertise_url: Mapped[str] = mapped_column(String(400))
    models: Mapped[str] = mapped_column(Text)  # the node's models root, resolved (mount points may differ)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_nodes_name", "name"),)


class SharedStore(Base):
    """Which blob store the cluster on this catalogue shares (`storage.shared_store`): one row, whose
    id the shared models folder also holds, so a node on any other folder is refused."""

    __tablename__ = "shared_store"
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    store_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)


class BlobLease(Base):
    """A blob a node of a cluster reads, pulls or has loaded (`storage.cluster_leases`): one row per
    (node, digest), alive exactly as long as its node's row (its heartbeat), so the node on duty
    never prunes a blob another node uses and a dead node's leases lapse with it."""

    __tablename__ = "blob_leases"
    node_id: Mapped[str] = mapped_column(String(32), ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(71), primary_key=True)

    __table_args__ = (Index("ix_blob_leases_digest", "digest"),)


class UploadSession(Base):
    """A push upload session in cluster mode (`storage.cluster_uploads`): its data lives in the
    shared models folder, its size here, so any node continues it. `version` counts the writes,
    so a node whose own record of the hash is older than another node's write re-reads the data."""

    __tablename__ = "upload_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    repository: Mapped[str] = mapped_column(String(400))
    node_id: Mapped[str] = mapped_column(String(32))  # the node that started it (for the operator)
    size: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class IssuedToken(Base):
    """A registry token a node of a cluster issued (`auth.shared_grants`), good on every node until
    it expires; stored by its sha256, so the catalogue never holds a usable token."""

    __tablename__ = "issued_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(Text)  # the authorized_keys line of the key it was issued to
    expires_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_issued_tokens_expires_at", "expires_at"),)


class UsedNonce(Base):
    """A signed token request's nonce, used once in the whole cluster (`auth.shared_grants`): the
    sha256 of the key and the nonce, kept while a replay's timestamp could still pass."""

    __tablename__ = "used_nonces"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_used_nonces_used_at", "used_at"),)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


async def upgrade_database(url: str, revision: str = "head") -> None:
    """Run Alembic migrations; in a thread because Alembic's command API is synchronous."""
    ensure_sqlite_dir(url)
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of an SQLite catalogue file, which SQLite will not do itself."""
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> AsyncEngine:
    """The server's engine. PostgreSQL connections are checked before use: a server outlives
    restarts and failovers of its database, and a pooled connection may have died meanwhile."""
    if is_postgresql(url):
        return create_async_engine(url, pool_pre_ping=True)
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def is_postgresql(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def hold_migration_lock(conn: Connection) -> None:
    """On PostgreSQL, wait until no other server migrates this catalogue, then hold it for this
    transaction: Alembic reads the version only after, so a server that waited finds the schema
    at head and has nothing to do. (SQLite serialises the migrating writers by itself.)"""
    if conn.dialect.name != "postgresql":
        return
    if conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}).scalar():
        return
    log.info("waiting for another corral server to finish migrating the catalogue")
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def dialect_insert(session: AsyncSession, table: type[Base]) -> Any:
    """An INSERT that can say ON CONFLICT, in the session's dialect (SQLite and PostgreSQL spell it
    alike): an upsert is one statement, so two servers writing the same row never collide."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def make_migration_engine(url: str) -> AsyncEngine:
    """The engine Alembic migrates with: WAL from the first migration on, so that servers opening
    the catalogue later never race to switch its journal mode (the switch needs an exclusive lock,
    and two connections asking for it at once fail at once); foreign keys off, because batch
    migrations on SQLite copy and drop tables, and a cascade would empty the children."""
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_wal)
    return engine


WAL_SWITCH_ATTEMPTS = 200  # 10 s, busy_timeout's length


def _sqlite_wal(dbapi_conn, _record) -> None:
    """WAL lets readers proceed during writes; busy_timeout absorbs brief write contention between
    two processes on one catalogue, and is set first so the switch to WAL waits too. On a brand-new
    file two processes switching at the same moment can still get "database is locked" at once
    (SQLite does not call the busy handler there): the switch is retried, as the timeout would."""
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA busy_timeout=10000")
        for attempt in range(WAL_SWITCH_ATTEMPTS):
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == WAL_SWITCH_ATTEMPTS - 1:
                    raise
                time.sleep(0.05)  # a connect hook: this runs in the driver's thread, not on the event loop
    finally:
        cur.close()


def _sqlite_pragmas(dbapi_conn, record) -> None:
    """The server's connections: WAL, and foreign keys that make cascades real."""
    _sqlite_wal(dbapi_conn, record)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)
