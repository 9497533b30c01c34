"""The whole HTTP surface of corral on one screen: every route, and which handler answers it.

Handlers are methods of small objects built by `server.app` from exactly what they use; this
table only says where each one is mounted (like ollama's `GenerateRoutes`). Middleware order and
the objects themselves live in `server.app`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from registry.airgap.bundle import Bundles
from registry.airgap.ollama_import import OllamaFolderImport
from registry.airgap.push import PushHandler
from registry.airgap.v2_writes import V2Writes
from registry.auth.access import TOKEN_PATH, Authenticator
from registry.cache.admin import CacheAdmin
from registry.library.cloud import CloudStatus
from registry.library.handlers import LibraryHandlers
from registry.mirror.pull import Puller
from registry.mirror.v2_listing import V2Listing
from registry.mirror.v2_reads import V2Reads
from registry.server.metrics import Metrics
from runner.http.anthropic import AnthropicRoutes
from runner.http.ollama import Runner
from runner.http.openai import OpenAIRoutes
from runner.http.responses import ResponsesRoutes

REPO = r"/v2/{ns:[^/]+}/{model:[^/]+}"
UPLOAD = REPO + r"/blobs/uploads/{upload_id:[0-9a-f]{32}}"


@dataclass(frozen=True)
class Handlers:
    library: LibraryHandlers
    cloud: CloudStatus
    v2_reads: V2Reads
    v2_listing: V2Listing
    v2_writes: V2Writes
    auth: Authenticator
    pull: Puller
    push: PushHandler
    bundles: Bundles
    ollama_import: OllamaFolderImport
    cache: CacheAdmin
    metrics: Metrics
    runner: Runner
    openai: OpenAIRoutes
    responses: ResponsesRoutes
    anthropic: AnthropicRoutes


def route_table(h: Handlers) -> list[web.RouteDef]:
    return [
        # ollama's model management (registry/library)
        web.get("/", h.library.root),
        web.get("/api/version", h.library.version),
        web.get("/api/status", h.cloud.status),
        web.get("/api/tags", h.library.list_tags),
        web.post("/api/show", h.library.show),
        web.delete("/api/delete", h.library.delete_model),
        web.post("/api/copy", h.library.copy_model),
        web.head("/api/blobs/{digest}", h.library.head_blob),
        web.post("/api/blobs/{digest}", h.library.post_blob),
        web.post("/api/create", h.library.create),
        # ollama's pull and push (registry/mirror, registry/airgap)
        web.post("/api/pull", h.pull.handle),
        web.post("/api/push", h.push.push),
        # inference (runner), the OpenAI-compatible API and the Anthropic-compatible one
        *inference_routes(h.runner),
        web.post("/v1/chat/completions", h.openai.chat),
        web.post("/v1/completions", h.openai.completions),
        web.post("/v1/embeddings", h.openai.embeddings),
        web.get("/v1/models", h.openai.models),
        web.get("/v1/models/{model:.+}", h.openai.model),
        web.post("/v1/responses", h.responses.create),
        web.post("/v1/messages", h.anthropic.messages),
        # the registry protocol: reads (registry/mirror), token and writes (registry/auth, registry/airgap)
        web.get("/v2/", h.v2_reads.ping),
        web.get("/v2", h.v2_reads.ping),
        web.get(REPO + "/manifests/{reference}", h.v2_reads.get_manifest),  # and HEAD
        web.get(REPO + "/blobs/{digest}", h.v2_reads.get_blob, allow_head=False),
        web.head(REPO + "/blobs/{digest}", h.v2_reads.head_blob),
        web.get("/v2/_catalog", h.v2_listing.catalog_page),
        web.get(REPO + "/tags/list", h.v2_listing.tags),
        web.get(TOKEN_PATH, h.auth.token),
        web.post(REPO + "/blobs/uploads/", h.v2_writes.start_upload),
        web.post(REPO + "/blobs/uploads", h.v2_writes.start_upload),
        web.get(UPLOAD, h.v2_writes.upload_status, allow_head=False),
        web.patch(UPLOAD, h.v2_writes.patch_upload),
        web.put(UPLOAD, h.v2_writes.finish_upload),
        web.delete(UPLOAD, h.v2_writes.cancel_upload),
        web.put(REPO + "/manifests/{reference}", h.v2_writes.put_manifest),
        web.delete(REPO + "/manifests/{reference}", h.v2_writes.delete_manifest),
        # air gap: bundles and ollama folders (registry/airgap)
        web.post("/api/corral/export", h.bundles.export),
        web.post("/api/corral/import", h.bundles.import_bundle),
        web.post("/api/corral/import/ollama", h.ollama_import.import_folder),
        # operating the cache (registry/cache) and watching it
        web.get("/metrics", h.metrics.handle),
        web.get("/corral", h.cache.status_page),
        web.get("/api/corral/status", h.cache.status_json),
        web.get("/api/corral/key", h.auth.public_key),
        web.post("/api/corral/prune", h.cache.prune),
        web.post("/api/corral/scrub", h.cache.scrub),
        web.post("/api/corral/pin", h.cache.pin),
        web.post("/api/corral/unpin", h.cache.unpin),
    ]


def inference_routes(runner: Runner) -> list[web.RouteDef]:
    """The runner's ollama routes; also mounted alone by the runner's tests and benchmark."""
    return [
        web.post("/api/generate", runner.generate),
        web.post("/api/chat", runner.chat),
        web.post("/api/embed", runner.embed),
        web.post("/api/embeddings", runner.embeddings),
        web.get("/api/ps", runner.ps),
    ]
