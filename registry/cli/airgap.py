"""CLI commands for carrying models into an air-gapped network and exposing corral on a LAN.

`push`, `export` and `import` talk to the server (OLLAMA_HOST) like every other command: the
server owns the store and the signing key. `cert`, `key` and `authorize` only touch local files
(the TLS directory, the key and authorized_keys under the models root), so they work before the
server is first started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tarfile
from pathlib import Path

from registry.airgap.bundle_index import INDEX_NAME, BundleError, BundleIndex
from registry.auth.certs import SERVER_DAYS, create_certificates, trust_instructions
from registry.auth.keys import key_blob
from registry.cli.common import AddCommand, client
from registry.cli.progress import EventProgress, Progress
from registry.config import Settings
from registry.storage.store import read_file_chunks

CHUNK = 1024 * 1024


async def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c, EventProgress() as progress:
        async for event in c.stream("/api/push", {"model": args.model, "insecure": args.insecure}):
            progress.update(event)
    return 0


def _read_index(path: Path) -> BundleIndex:
    """The index of an earlier bundle: the bundle file itself or its extracted corral-bundle.json."""
    if tarfile.is_tarfile(path):
        with tarfile.open(path, "r|") as tar:
            member = tar.next()
            if member is None or member.name != INDEX_NAME or not member.isfile():
                raise BundleError(f"{path}: the first entry is not {INDEX_NAME}")
            f = tar.extractfile(member)
            assert f is not None  # a regular file always has data
            return BundleIndex.parse(f.read())
    return BundleIndex.parse(path.read_bytes())


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    exclude: list[str] = []
    if args.since:
        try:
            previous = await asyncio.to_thread(_read_index, Path(args.since))
        except BundleError as exc:
            print(f"Error: --since: {exc}", file=sys.stderr)
            return 1
        exclude = sorted(str(d) for d in previous.digests())
    output = Path(args.output)
    partial = output.with_name(output.name + ".partial")
    body = {"models": args.models, "exclude": exclude, "sign": args.sign}
    async with client(settings) as c, Progress() as progress, c.download("/api/corral/export", body) as resp:
        total = resp.content_length or 0
        label = f"writing {output.name}"
        f = await asyncio.to_thread(open, partial, "wb")
        try:
            written = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                await asyncio.to_thread(f.write, chunk)
                written += len(chunk)
                if total:
                    progress.transfer(str(output), label, total, written)
            await asyncio.to_thread(os.fsync, f.fileno())
        except BaseException:
            f.close()
            partial.unlink(missing_ok=True)
            raise
        f.close()
    if total and written != total:
        partial.unlink(missing_ok=True)
        print(f"Error: export ended after {written} of {total} bytes", file=sys.stderr)
        return 1
    os.replace(partial, output)
    print(f"wrote {output} ({len(args.models)} model(s){', signed' if args.sign else ''})")
    return 0


async def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.file) == bool(args.ollama_dir):
        print("Error: give either a bundle FILE or --ollama-dir DIR", file=sys.stderr)
        return 2
    result: dict[str, object] = {}
    async with client(settings) as c, EventProgress() as progress:
        if args.ollama_dir:
            root = await asyncio.to_thread(lambda: Path(args.ollama_dir).expanduser().resolve())
            events = c.stream("/api/corral/import/ollama", {"path": str(root)})
        else:
            events = c.stream("/api/corral/import", None, data=read_file_chunks(Path(args.file)))
        async for event in events:
            progress.update(event)
            result = event
    print("imported: " + ", ".join(result.get("models", [])))
    return 0


async def cmd_cert(args: argparse.Namespace, settings: Settings) -> int:
    directory = Path(args.dir) if args.dir else settings.models.parent / "tls"
    files = await asyncio.to_thread(create_certificates, directory, args.hosts, args.days)
    print(trust_instructions(files, args.hosts))
    return 0


async def cmd_key(args: argparse.Namespace, settings: Settings) -> int:
    """The running server's key, asked of it: the CLI's own OLLAMA_MODELS may name another folder."""
    async with client(settings) as c:
        answer = await c.request("GET", "/api/corral/key")
    print(answer["key"])
    print(f"(corral's key is {answer['path']} on the server; add this line to another corral's "
          f"authorized_keys, e.g. with `corral authorize`, to let this corral push there)", file=sys.stderr)
    return 0


def _authorize(path: Path, key: str) -> tuple[str, bool]:
    """Append a key line (or the line of a .pub file) to authorized_keys unless already there."""
    candidate = Path(key).expanduser()
    line = candidate.read_text().strip() if not key.startswith("ssh-") and candidate.is_file() else key.strip()
    blob = key_blob(line)
    existing = path.read_text().splitlines() if path.exists() else []
    for old in existing:
        try:
            if key_blob(old) == blob:
                return line, False
        except ValueError:
            continue
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(line + "\n")
    return line, True


async def cmd_authorize(args: argparse.Namespace, settings: Settings) -> int:
    try:
        text, added = await asyncio.to_thread(_authorize, settings.authorized_keys_path, args.key)
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    state = "authorized" if added else "already authorized"
    print(f"{state} in {settings.authorized_keys_path}: {text.strip()}")
    return 0


def add_parsers(add: AddCommand) -> None:
    p = add("push", cmd_push, "push a model to another corral or a Docker registry (NAME's host)")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="use http instead of https")
    p = add("export", cmd_export, "write models into a bundle file for an air-gapped corral")
    p.add_argument("models", nargs="+", metavar="NAME")
    p.add_argument("-o", "--output", required=True, help="bundle file to write")
    p.add_argument("--since", help="an earlier bundle (or its corral-bundle.json): leave out its blobs")
    p.add_argument("--sign", action="store_true", help="sign the bundle index with corral's key")
    p = add("import", cmd_import, "import a bundle file, or every model of an ollama models folder")
    p.add_argument("file", nargs="?", help="bundle file written by `corral export`")
    p.add_argument("--ollama-dir", help="an ollama models folder, e.g. ~/.ollama/models")
    p = add("cert", cmd_cert, "create a local CA and a server certificate for https")
    p.add_argument("hosts", nargs="+", metavar="HOST", help="DNS names and IP addresses clients use")
    p.add_argument("--dir", help="where to keep the CA and certificate (default: tls/ beside the models)")
    p.add_argument("--days", type=int, default=SERVER_DAYS, help=f"validity (default {SERVER_DAYS})")
    add("key", cmd_key, "print corral's public key (to authorize it on another corral)")
    p = add("authorize", cmd_authorize, "allow a public key to push to this corral")
    p.add_argument("key", help="an ssh-ed25519 public key line, or a .pub file")
