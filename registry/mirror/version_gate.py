"""The upstream's version gate, remembered per tag: a cached tag answers an old client as the
upstream answered it.

registry.ollama.ai refuses a manifest to an ollama older than the model needs: 412 and a readable
body (the client's User-Agent, which corral forwards, carries its version). Without memory, a tag
cached for a newer client would be served to an old one until CORRAL_MANIFEST_TTL runs out: a
model it cannot load instead of the upstream's message.

The gate is monotone in the version, so two bounds per tag say all that is known: the oldest
version the upstream gave the cached manifest to (every newer client is served from the cache)
and the newest it refused (every older client gets that refusal, verbatim, without asking). A
version between them, or any version before anything is known, is asked upstream, even within
the TTL, and the answer moves a bound. A manifest that changed upstream starts the first bound
over (a new model may need more); a refusal at or above it drops it (the upstream wants more
now). A User-Agent without an ollama version is not gated here: the TTL decides, as before.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from registry.mirror.upstream import Refused
from registry.model.names import ModelName
from registry.storage.db import VersionGate, dialect_insert

Version = tuple[int, int, int]
_OLLAMA_VERSION = re.compile(r"\bollama/(\d+)\.(\d+)\.(\d+)")


def client_version(user_agent: str) -> Version | None:
    """`ollama/0.33.0 (amd64 linux) Go/…` → (0, 33, 0); None for other clients. A pre-release
    suffix (`0.12.0-rc1`) counts as its release."""
    match = _OLLAMA_VERSION.search(user_agent)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


class Verdict(enum.Enum):
    SERVE = "serve"  # the upstream gave this manifest to this version or an older one
    REFUSE = "refuse"  # the upstream refused this version or a newer one
    ASK = "ask"  # nothing known for this version: the upstream decides


@dataclass(frozen=True)
class Refusal:
    """The upstream's refusal as it was sent, to send again."""

    status: int
    body: bytes
    content_type: str

    def error(self) -> Refused:
        return Refused(self.status, self.body, self.content_type)


@dataclass(frozen=True)
class Gate:
    """What is known of one tag's gate."""

    manifest_digest: str | None = None  # the manifest `passed` received
    passed: Version | None = None
    refused: Version | None = None
    refusal: Refusal | None = None

    def verdict(self, version: Version) -> Verdict:
        if self.refused is not None and self.refusal is not None and version <= self.refused:
            return Verdict.REFUSE
        if self.passed is not None and version >= self.passed:
            return Verdict.SERVE
        return Verdict.ASK

    def passed_by(self, version: Version, digest: str) -> Gate:
        """The upstream gave `digest` to `version`."""
        same = digest == self.manifest_digest and self.passed is not None
        passed = min(version, self.passed) if same and self.passed is not None else version
        if self.refused is not None and self.refused < passed:
            return Gate(digest, passed, self.refused, self.refusal)
        return Gate(digest, passed)

    def refused_for(self, version: Version, refusal: Refusal) -> Gate:
        """The upstream refused `version` with `refusal`."""
        refused, kept = (version, refusal) if self.refused is None or version >= self.refused else (
            self.refused, self.refusal)
        if self.passed is not None and self.passed > refused:
            return Gate(self.manifest_digest, self.passed, refused, kept)
        return Gate(refused=refused, refusal=kept)


class VersionGates:
    """The gates of every tag, in the catalogue's `version_gates` table."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def get(self, name: ModelName) -> Gate:
        async with self.sessions() as s:
            row = await s.get(VersionGate, name.key)
        return _gate(row) if row is not None else Gate()

    async def passed(self, name: ModelName, version: Version, digest: str) -> None:
        async with self.sessions.begin() as s:
            row = await _locked(s, name)
            _store(row, _gate(row).passed_by(version, digest))

    async def refused(self, name: ModelName, version: Version, refused: Refused) -> None:
        refusal = Refusal(refused.status, refused.body, refused.content_type)
        async with self.sessions.begin() as s:
            row = await _locked(s, name)
            _store(row, _gate(row).refused_for(version, refusal))


async def _locked(s: AsyncSession, name: ModelName) -> VersionGate:
    """The tag's row, created empty if missing, locked until the transaction ends: many clients
    (on several nodes) pulling one tag at once each update it, and every update reads it first."""
    await s.execute(dialect_insert(s, VersionGate).values(name_key=name.key, updated_at=time.time())
                    .on_conflict_do_nothing())
    return (await s.execute(select(VersionGate).where(VersionGate.name_key == name.key).with_for_update())).scalar_one()


def _text(version: Version | None) -> str | None:
    return ".".join(map(str, version)) if version is not None else None


def _version(text: str | None) -> Version | None:
    if not text:
        return None
    major, minor, patch = (int(part) for part in text.split("."))
    return major, minor, patch


def _gate(row: VersionGate) -> Gate:
    refusal = None
    if row.refused_status is not None:
        refusal = Refusal(row.refused_status, row.refused_body or b"", row.refused_type or "text/plain")
    return Gate(row.manifest_digest, _version(row.passed_version), _version(row.refused_version), refusal)


def _store(row: VersionGate, gate: Gate) -> None:
    values = {
        "manifest_digest": gate.manifest_digest,
        "passed_version": _text(gate.passed),
        "refused_version": _text(gate.refused),
        "refused_status": gate.refusal.status if gate.refusal else None,
        "refused_body": gate.refusal.body if gate.refusal else None,
        "refused_type": gate.refusal.content_type if gate.refusal else None,
        "updated_at": time.time(),
    }
    for key, value in values.items():
        setattr(row, key, value)
