"""Push upload sessions in a cluster: any node continues a session another node started.

The data stays where `storage.uploads` keeps it, a folder per session, but always under the shared
models folder (`tmp/uploads`, whatever OLLAMA_TMPDIR says), and each session has a row in
`upload_sessions` with its repository, size and write count. `hold` takes a PostgreSQL
transaction-level advisory lock on the session (two keys: UPLOAD_LOCKS and the id's first 32
bits) for the length of a write, so two nodes never write one session at once, then re-reads the
row: a session another node has written since is taken at the size that node recorded, and its
running hash is dropped (the data is hashed from the file at commit). A session finished or
cancelled elsewhere has no row any more and is unknown here too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.storage.db import UPLOAD_LOCKS, UploadSession
from registry.storage.uploads import UPLOAD_ID, Upload, UploadGone, UploadStore


class ClusterUploadStore(UploadStore):
    def __init__(self, root: Path, max_size: int, timeout: float, sessions: async_sessionmaker[AsyncSession],
                 node_id: str) -> None:
        super().__init__(root, max_size, timeout)
        self._sessions = sessions
        self.node_id = node_id
        self._versions: dict[str, int] = {}  # the write count this node's record of each session is from

    async def create(self, repository: str) -> Upload:
        upload = await super().create(repository)
        now = time.time()
        async with self._sessions.begin() as s:
            s.add(UploadSession(id=upload.id, repository=repository, node_id=self.node_id, size=0, version=0,
                                created_at=now, updated_at=now))
        self._versions[upload.id] = 0
        return upload

    async def get(self, upload_id: str, repository: str) -> Upload | None:
        if not UPLOAD_ID.match(upload_id):
            return None
        row = await self._row(upload_id)
        if row is None or row.repository != repository:
            return None
        upload = self._open.setdefault(upload_id, Upload(upload_id, self.root / upload_id, row.repository, row.size))
        if not upload.lock.locked():
            self._adopt(upload, row)
        return upload

    @contextlib.asynccontextmanager
    async def hold(self, upload: Upload) -> AsyncIterator[None]:
        async with upload.lock, self._sessions.begin() as locked:
            await locked.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"),
                                 {"space": UPLOAD_LOCKS, "key": int(upload.id[:8], 16) - 2**31})
            row = await self._row(upload.id)
            if row is None:
                self._forget(upload.id)
                raise UploadGone(upload.id)
            self._adopt(upload, row)
            try:
                yield
            finally:
                version = row.version + 1
                async with self._sessions.begin() as s:
                    await s.execute(update(UploadSession).where(UploadSession.id == upload.id)
                                    .values(size=upload.size, version=version, updated_at=time.time()))
                if upload.id in self._open:  # not finished or cancelled under the hold
                    self._versions[upload.id] = version

    async def discard(self, upload: Upload) -> None:
        await super().discard(upload)
        self._versions.pop(upload.id, None)
        async with self._sessions.begin() as s:
            await s.execute(delete(UploadSession).where(UploadSession.id == upload.id))

    async def expire(self) -> list[str]:
        """Remove idle sessions (their files, then their rows), and forget the sessions other nodes
        have finished."""
        removed = await super().expire()
        async with self._sessions.begin() as s:
            if removed:
                await s.execute(delete(UploadSession).where(UploadSession.id.in_(removed)))
            known = set((await s.execute(select(UploadSession.id))).scalars())
        for upload_id in [i for i, u in self._open.items() if i not in known and not u.lock.locked()]:
            self._forget(upload_id)
        return removed

    def _adopt(self, upload: Upload, row: UploadSession) -> None:
        """Take the row's size when another node has written the session since this node did."""
        if self._versions.get(upload.id) != row.version:
            upload.size, upload.hasher = row.size, None
            self._versions[upload.id] = row.version

    def _forget(self, upload_id: str) -> None:
        self._open.pop(upload_id, None)
        self._versions.pop(upload_id, None)

    async def _row(self, upload_id: str) -> UploadSession | None:
        async with self._sessions() as s:
            return (await s.execute(select(UploadSession).where(UploadSession.id == upload_id))).scalar_one_or_none()
