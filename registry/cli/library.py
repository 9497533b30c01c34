"""`corral list`, `show`, `rm`, `cp`, `create` and `version`: the model library as ollama's CLI shows it.

Named for registry.library, whose routes (/api/tags, /api/show, /api/delete, /api/copy,
/api/blobs, /api/create) these commands call. `create` reads the Modelfile here and uploads the
local files it names (FROM, ADAPTER) as blobs first, as `ollama create` does, so the server never
reads the client's disk.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from registry import __version__
from registry.cli.client import CorralClient, base_url
from registry.cli.common import AddCommand, client, human_ago, table
from registry.cli.progress import EventProgress, Progress
from registry.config import Settings
from registry.model.modelfile import ModelfileError, parse_modelfile, parse_parameters
from registry.storage.store import hash_file, read_file_chunks
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


def print_info(data: dict[str, Any], out: TextIO | None = None) -> None:
    """An /api/show answer as `ollama show` prints it: model, capabilities, parameters, license."""
    out = out or sys.stdout
    details = data.get("details", {})
    info = data.get("model_info", {})
    arch = info.get("general.architecture", details.get("family", ""))
    print("  Model", file=out)
    for label, value in (
        ("architecture", arch),
        ("parameters", details.get("parameter_size", "")),
        ("context length", info.get(f"{arch}.context_length", "")),
        ("embedding length", info.get(f"{arch}.embedding_length", "")),
        ("quantization", details.get("quantization_level", "")),
    ):
        if value != "":
            print(f"    {label:<20}{value}", file=out)
    sections = (
        ("Capabilities", data.get("capabilities") or []),
        ("Parameters", (data.get("parameters") or "").splitlines()),
        ("License", (data.get("license") or "").strip().splitlines()[:2]),
    )
    for title, lines in sections:
        if lines:
            print(f"\n  {title}", file=out)
            for line in lines:
                print(f"    {line}", file=out)
    print(file=out)


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        data = await c.request("POST", "/api/show", {"model": args.model})
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            print(data.get(flag, ""))
            return 0
    print_info(data)
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


async def _counted(chunks: AsyncIterable[bytes], moved: Callable[[int], None]) -> AsyncIterator[bytes]:
    """The chunks of an upload, telling `moved` how many bytes have gone so far."""
    sent = 0
    async for chunk in chunks:
        yield chunk
        sent += len(chunk)
        moved(sent)


async def _upload(c: CorralClient, path: Path, progress: Progress) -> str:
    """Send a local file as a blob unless the server has it, a bar showing the upload."""
    if not await asyncio.to_thread(path.is_file):
        raise ModelfileError(f"no such file: {path}")
    digest, size = await hash_file(path)
    if not await c.blob_exists(str(digest)):
        label = f"copying file {digest.short}"
        progress.transfer(str(digest), label, size, 0)
        moved = functools.partial(progress.transfer, str(digest), label, size)
        await c.upload_blob(str(digest), _counted(read_file_chunks(path), moved))
    return str(digest)


def _local_path(arg: str, base: Path) -> Path | None:
    """FROM/ADAPTER name a file when one exists there (relative to the Modelfile), else a model."""
    candidate = Path(os.path.expanduser(arg))
    if not candidate.is_absolute():
        candidate = base / candidate
    return candidate if candidate.exists() else None


async def build_create_request(c: CorralClient, name: str, modelfile: Path, progress: Progress) -> dict[str, Any]:
    parsed = parse_modelfile(await asyncio.to_thread(modelfile.read_text))
    body: dict[str, Any] = {"model": name}
    params: list[tuple[str, str]] = []
    messages: list[dict[str, str]] = []
    licenses: list[str] = []
    progress.step("gathering model components")
    for command, arg in parsed.commands:
        if command == "from":
            path = await asyncio.to_thread(_local_path, arg, modelfile.parent)
            if path is None:
                body["from"] = arg
            else:
                body["files"] = {path.name: await _upload(c, path, progress)}
        elif command == "adapter":
            path = await asyncio.to_thread(_local_path, arg, modelfile.parent)
            if path is None:
                raise ModelfileError(f"adapter file not found: {arg}")
            body["adapters"] = {path.name: await _upload(c, path, progress)}
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
    async with client(settings) as c, EventProgress() as progress:
        body = await build_create_request(c, args.model, modelfile, progress)
        async for event in c.stream("/api/create", body):
            progress.update(event)
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
