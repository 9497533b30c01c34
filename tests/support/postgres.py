"""A throwaway PostgreSQL server from Debian's `postgresql` package, for catalogue tests.

`initdb` into a fresh temporary folder, then `postgres` listening on a free loopback port and on
its own socket folder (never the system's 5432 or /var/run/postgresql), trust authentication
for the `corral` superuser, durability off (a test database need not survive a power cut).
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user the
package creates (or `nobody`). The `postgres` fixture (tests/registry/conftest.py) starts one
per session, stopped (fast shutdown) and removed at its end; each test gets its own database
(`new_database`), much cheaper than a server per test. `both_databases` runs a test on SQLite and
on PostgreSQL.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import pytest

from tests.support.catalogue import execute
from tests.support.server import free_port

SUPERUSER = "corral"


def postgres_bin() -> Path:
    """The newest installed server's binaries (Debian installs them per major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run scripts/bootstrap")
    return Path(found[-1]).parent


def _run_as() -> str | None:
    """The user the server runs as: ourselves, unless we are root (which PostgreSQL refuses)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")


@dataclass
class PostgresServer:
    root: Path
    port: int
    user: str | None
    process: subprocess.Popen | None = None
    _names: Iterator[int] = field(default_factory=lambda: count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        binaries = postgres_bin()
        if self.user is not None:
            shutil.chown(self.root, self.user)
        subprocess.run(
            [str(binaries / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            user=self.user, check=True, capture_output=True,
        )
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        started = subprocess.run(
            [str(binaries / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
             "-w", "-t", "60", "start"],
            user=self.user, capture_output=True, text=True,
        )
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {started.stdout}{started.stderr}{self.log()}")
        return self

    def stop(self) -> None:
        subprocess.run([str(postgres_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       user=self.user, capture_output=True)

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def new_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        with self._lock:
            name = f"corral_{next(self._names)}"
        execute(self.url(), f"CREATE DATABASE {name}", autocommit=True)
        return self.url(name)


# Tests that run against both engines: `database_url` (and `new_database`) follow this parameter.
both_databases = pytest.mark.parametrize("database_kind", ["sqlite", "postgresql"], indirect=True)


def start_postgres() -> PostgresServer:
    # not under pytest's tmp_path: its parents are private to root, and the server may run as another user
    root = Path(tempfile.mkdtemp(prefix="corral-postgres-"))
    root.chmod(0o755)
    return PostgresServer(root, free_port(), _run_as()).start()
