"""The objects one running server is made of, built once by server.py and shared by handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from registry.catalog import Catalog
from registry.config import Settings
from registry.model_contents import ModelReader
from registry.store import BlobStore

if TYPE_CHECKING:
    from registry.content import ContentSource


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: BlobStore
    catalog: Catalog
    content: ContentSource
    model_reader: ModelReader


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
