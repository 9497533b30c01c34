"""`corral list`, `show`, `rm`, `cp`, `create` and `version`: the model library as ollama's CLI shows it.

Named for registry.library, whose routes (/api/tags, /api/show, /api/delete, /api/copy,
/api/blobs, /api/create) these commands call. `create` reads the Modelfile here and uploads the
local files it names (FROM, ADAPTER) as blobs first, as `ollama create` does, so the server never
reads the client's disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from registry import __version__
from registry.cli.client import CorralClient, base_url
from registry.cli.common import AddCommand, client, human_ago, table
from registry.cli.progress import ProgressBars
from registry.config import Settings
from registry.model.modelfile import ModelfileError, parse_modelfile, parse_parameters
from registry.storage.store import hash_file
from registry.units import format_byte_size


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        data = await c.request("GET", "/api/tags")
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for m in data["models"]:
        modified = datetime.fromisoformat(m["modified_at"]).timestamp()
        rows.append([m["name"], m["digest"][:12], format_byte_size(m["size"]), human_ago(modified)])
    print(table(rows))
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        data = await c.request("POST", "/api/show", {"model": args.model})
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            print(data.get(flag, ""))
            return 0
    details = data.get("details", {})
    info = data.get("model_info", {})
    arch = info.get("general.architecture", details.get("family", ""))
    print("  Model")
    for label, value in (
        ("architecture", arch),
        ("parameters", details.get("parameter_size", "")),
        ("context length", info.get(f"{arch}.context_length", "")),
        ("embedding length", info.get(f"{arch}.embedding_length", "")),
        ("quantization", details.get("quantization_level", "")),
    ):
        if value != "":
            print(f"    {label:<20}{value}")
    if data.get("capabilities"):
        print("\n  Capabilities")
        for cap in data["capabilities"]:
            print(f"    {cap}")
    if data.get("parameters"):
        print("\n  Parameters")
        for line in data["parameters"].splitlines():
            print(f"    {line}")
    if data.get("license"):
        print("\n  License")
        for line in data["license"].strip().splitlines()[:2]:
            print(f"    {line}")
    return 0


async def cmd_rm(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        for name in args.models:
            await c.request("DELETE", "/api/delete", {"model": name})
            print(f"deleted '{name}'")
    return 0


async def cmd_cp(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        await c.request("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


async def _upload(c: CorralClient, path: Path) -> str:
    if not await asyncio.to_thread(path.is_file):
        raise ModelfileError(f"no such file: {path}")
    digest, _ = await hash_file(path)
    if not await c.blob_exists(str(digest)):
        print(f"copying file {digest} 0%", file=sys.stderr)
        await c.upload_blob(str(digest), path)
        print(f"copying file {digest} 100%", file=sys.stderr)
    return str(digest)


def _local_path(arg: str, base: Path) -> Path | None:
    """FROM/ADAPTER name a file when one exists there (relative to the Modelfile), else a model."""
    candidate = Path(os.path.expanduser(arg))
    if not candidate.is_absolute():
        candidate = base / candidate
    return candidate if candidate.exists() else None


async def build_create_request(c: CorralClient, name: str, modelfile: Path) -> dict[str, Any]:
    parsed = parse_modelfile(await asyncio.to_thread(modelfile.read_text))
    body: dict[str, Any] = {"model": name}
    params: list[tuple[str, str]] = []
    messages: list[dict[str, str]] = []
    licenses: list[str] = []
    print("gathering model components", file=sys.stderr)
    for command, arg in parsed.commands:
        if command == "from":
            path = await asyncio.to_thread(_local_path, arg, modelfile.parent)
            if path is None:
                body["from"] = arg
            else:
                body["files"] = {path.name: await _upload(c, path)}
        elif command == "adapter":
            path = await asyncio.to_thread(_local_path, arg, modelfile.parent)
            if path is None:
                raise ModelfileError(f"adapter file not found: {arg}")
            body["adapters"] = {path.name: await _upload(c, path)}
        elif command in ("template", "system", "renderer", "parser", "requires"):
            body[command] = arg
        elif command == "license":
            licenses.append(arg)
        elif command == "message":
            role, _, content = arg.partition(" ")
            messages.append({"role": role, "content": content})
        else:
            params.append((command, arg))
    if params:
        body["parameters"] = parse_parameters(params)
    if messages:
        body["messages"] = messages
    if licenses:
        body["license"] = licenses
    return body


async def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    modelfile = Path(args.file)
    if await asyncio.to_thread(modelfile.is_dir):
        modelfile = modelfile / "Modelfile"
    bars = ProgressBars()  # a FROM model the server lacks is pulled first: its layers get bars
    try:
        async with client(settings) as c:
            body = await build_create_request(c, args.model, modelfile)
            async for event in c.stream("/api/create", body):
                bars.update(event)
    finally:
        bars.close()
    return 0


async def cmd_version(args: argparse.Namespace, settings: Settings) -> int:
    """The server's version and, when it differs or no server answers, the client's (as `ollama -v`)."""
    try:
        async with client(settings) as c:
            server = (await c.request("GET", "/api/version")).get("corral", "")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc, aiohttp.ClientSSLError):  # a server answered that this client does not trust
            raise
        print(f"Warning: could not connect to a running corral at {base_url(settings.host)}")
        print(f"Warning: client version is {__version__}")
        return 0
    print(f"corral version is {server}")
    if server != __version__:
        print(f"Warning: client version is {__version__}")
    return 0


def add_parsers(add: AddCommand) -> None:
    p = add("create", cmd_create, "create a model from a Modelfile")
    p.add_argument("model")
    p.add_argument("-f", "--file", default="Modelfile", help="Modelfile path (default ./Modelfile)")
    add("list", cmd_list, "list models", aliases=("ls",))
    p = add("show", cmd_show, "show information about a model")
    p.add_argument("model")
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        p.add_argument(f"--{flag}", action="store_true", help=f"show the model's {flag}")
    p = add("rm", cmd_rm, "remove models")
    p.add_argument("models", nargs="+")
    p = add("cp", cmd_cp, "copy a model")
    p.add_argument("source")
    p.add_argument("destination")
    add("version", cmd_version, "print the server's and the client's version")
