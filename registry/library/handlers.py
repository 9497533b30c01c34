"""ollama's model-management endpoints: version, tags, show, copy, delete, blobs, create.

Shapes, status codes and messages follow ollama's server/routes.go so that the official clients
(and `ollama` CLI pointed at corral) behave exactly as against ollama.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from registry import __version__
from registry.library.create import ModelCreator
from registry.library.create_request import parse_create_request
from registry.model.gguf import capabilities
from registry.model.modelfile import format_parameters, render_modelfile
from registry.model.names import Digest, InvalidDigestError, InvalidNameError, ModelName
from registry.storage.catalog import Catalog, ModelNotFound, ModelRecord
from registry.storage.contents import ListFacts, ModelContents, ModelReader
from registry.storage.store import BlobError, BlobStore
from registry.web.errors import ApiError
from registry.web.jsonbody import field, model_field, parse_name, read_json_object
from registry.web.ndjson import stream_progress
from runner.gotime import go_time

OLLAMA_COMPAT_VERSION = "0.33.0"  # the ollama release whose wire protocol corral implements


def details_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    families = config.get("model_families")
    return {
        "parent_model": "",
        "format": config.get("model_format", ""),
        "family": config.get("model_family", ""),
        "families": families if families else None,
        "parameter_size": config.get("model_type", ""),
        "quantization_level": config.get("file_type", ""),
    }


def list_details(config: Mapping[str, Any], facts: ListFacts | None) -> dict[str, Any]:
    """/api/tags' details: the config's, completed as ollama's model list completes them from the
    GGUF header (a quantization the config leaves unknown, context and embedding lengths)."""
    details = details_from_config(config)
    if facts is None:
        return details
    details["parent_model"] = facts.parent_model
    if details["quantization_level"] in ("", "unknown") and facts.quantization != "unknown":
        details["quantization_level"] = facts.quantization
    for key, fallback in (("context_length", facts.context_length), ("embedding_length", facts.embedding_length)):
        value = config.get(key)
        value = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else fallback
        if value:
            details[key] = value
    return details


def _digest_param(request: web.Request) -> Digest:
    try:
        return Digest.parse(request.match_info["digest"])
    except InvalidDigestError:
        raise ApiError(400, "invalid digest format") from None



class LibraryHandlers:
    """ollama's model-management routes over the catalogue and the blob store."""

    def __init__(self, catalog: Catalog, store: BlobStore, model_reader: ModelReader, creator: ModelCreator,
                 max_upload: int) -> None:
        self.catalog = catalog
        self.store = store
        self.model_reader = model_reader
        self.creator = creator
        self.max_upload = max_upload

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")


    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": OLLAMA_COMPAT_VERSION, "corral": __version__})


    async def list_tags(self, request: web.Request) -> web.Response:
        records = await self.catalog.list_models()
        return web.json_response({"models": [await self._listed(record) for record in records]})

    async def _listed(self, record: ModelRecord) -> dict[str, Any]:
        """One /api/tags entry (api.ListModelResponse)."""
        facts = await self.model_reader.list_facts(record)
        config = facts.config if facts is not None else {}
        shortest = record.name.display_shortest()
        entry: dict[str, Any] = {"name": shortest, "model": shortest}
        for key in ("remote_model", "remote_host"):
            if isinstance(config.get(key), str) and config[key]:
                entry[key] = config[key]
        entry |= {
            "modified_at": go_time(record.modified_at),
            "size": record.size,
            "digest": record.manifest_digest.hex,
            "details": list_details(config, facts),
        }
        if facts is not None and facts.capabilities:
            entry["capabilities"] = list(facts.capabilities)
        return entry


    async def _contents(self, name: ModelName) -> ModelContents:
        try:
            record: ModelRecord = await self.catalog.require(name)
        except ModelNotFound:
            raise ApiError(404, f"model '{name.display_shortest()}' not found") from None
        return await self.model_reader.read(record)


    async def show(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        name = parse_name(model_field(body))
        verbose = bool(field(body, "verbose", bool, False))
        system_override = field(body, "system", str)
        template_override = field(body, "template", str)
        field(body, "options", dict)
        contents = await self._contents(name)
        template = template_override if template_override is not None else contents.template
        system = system_override if system_override is not None else contents.system
        out: dict[str, Any] = {
            "modelfile": render_modelfile(
                from_line=str(contents.model_path) if contents.model_path else name.display_shortest(),
                short_name=name.display_shortest(),
                template=template,
                system=system,
                params=contents.params,
                messages=contents.messages,
                license=contents.license,
                adapters=[str(p) for p in contents.adapters],
                projectors=[str(contents.projector)] if contents.projector else (),
                renderer=contents.config.get("renderer") or None,
                parser=contents.config.get("parser") or None,
            ),
            "details": details_from_config(contents.config),
            "modified_at": go_time(contents.record.modified_at),
        }
        if contents.license:
            out["license"] = "\n".join(contents.license)
        if contents.params:
            out["parameters"] = format_parameters(contents.params)
        shown_template = template or (contents.gguf.chat_template if contents.gguf else None)
        if shown_template:
            out["template"] = shown_template
        if system:
            out["system"] = system
        if contents.messages:
            out["messages"] = contents.messages
        if contents.gguf is not None:
            out["model_info"] = contents.gguf.model_info(verbose=verbose)
            out["tensors"] = contents.gguf.show_tensors()
            caps = capabilities(contents.gguf, template, has_projector=contents.projector is not None)
            out["capabilities"] = [*caps, *(c for c in contents.config.get("capabilities", []) if c not in caps)]
        if contents.projector_digest is not None:
            projector = await self.model_reader.gguf_info(contents.projector_digest)
            out["projector_info"] = projector.kv_info(verbose=verbose)
        for key in ("renderer", "parser", "requires"):
            if contents.config.get(key):
                out[key] = contents.config[key]
        return web.json_response(out)


    async def delete_model(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        given = model_field(body)
        name = parse_name(given)
        try:
            await self.catalog.delete(name)
        except ModelNotFound:
            raise ApiError(404, f"model '{given}' not found") from None  # the name as given, like ollama
        return web.Response(status=200)


    async def copy_model(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        source_text = field(body, "source", str)
        destination_text = field(body, "destination", str)
        if not source_text or not destination_text:
            raise ApiError(400, "source and destination are required")
        source = parse_name(source_text)
        try:
            destination = ModelName.parse(destination_text)
        except InvalidNameError:
            raise ApiError(400, f"destination \"{destination_text}\" is invalid") from None
        try:
            await self.catalog.copy(source, destination)
        except ModelNotFound:
            raise ApiError(404, f"model \"{source_text}\" not found") from None
        return web.Response(status=200)


    async def head_blob(self, request: web.Request) -> web.Response:
        digest = _digest_param(request)
        if await self.catalog.servable_size(digest) is None:
            raise ApiError(404, f"blob {digest} not found")
        return web.Response(status=200)


    async def post_blob(self, request: web.Request) -> web.Response:
        digest = _digest_param(request)
        if await self.catalog.servable_size(digest) is not None:
            await request.release()
            return web.Response(status=200)
        if request.content_length is not None and request.content_length > self.max_upload:
            raise ApiError(413, f"blob exceeds the upload limit of {self.max_upload} bytes")
        try:
            result = await self.store.ingest(
                request.content.iter_chunked(1024 * 1024), expected=digest, max_size=self.max_upload
            )
        except BlobError as exc:
            raise ApiError(400, str(exc)) from None
        await self.catalog.record_blob(result.digest, result.size)
        return web.Response(status=201)


    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request)
        create_request = parse_create_request(body)
        plan = await self.creator.plan(create_request)
        events = self.creator.events(create_request, plan)
        return await stream_progress(request, create_request.stream, events)
