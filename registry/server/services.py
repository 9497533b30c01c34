"""The objects one running server is made of, built once by server.py and shared by handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from registry.storage.catalog import Catalog
from registry.config import Settings
from registry.mirror.fills import Fills
from registry.storage.leases import Leases
from registry.mirror.manifest_cache import ManifestCache
from registry.storage.contents import ModelReader
from registry.storage.store import BlobStore
from registry.mirror.upstream import Upstream

if TYPE_CHECKING:
    from registry.mirror.content import ContentSource


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: BlobStore
    catalog: Catalog
    content: ContentSource
    model_reader: ModelReader
    upstream: Upstream  # the only way out to upstream registries (host policy, offline)
    manifests: ManifestCache
    fills: Fills
    leases: Leases  # blobs being read right now: never pruned, files removed after the last reader


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
