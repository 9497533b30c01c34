"""The `corral` command. `serve` runs the server; every other command talks to it over HTTP
(OLLAMA_HOST), as ollama's CLI does, so the CLI works the same against a remote corral."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp

from registry.cli import airgap, cache, completion, library, mirror, runner
from registry.cli.client import ClientError, base_url
from registry.cli.common import Command, settings_from_args
from registry.config import SettingsError
from registry.model.modelfile import ModelfileError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file (default $CORRAL_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral", description=__doc__)
    parser.add_argument("-v", "--version", action="store_true", help="print the server's and the client's version")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="start the server")
    _add_common(serve)
    serve.add_argument("--host", help="listen address (overrides OLLAMA_HOST)")
    serve.add_argument("--models", help="models root (overrides OLLAMA_MODELS)")
    serve.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate for https")
    serve.add_argument("--tls-key", dest="tls_key", help="PEM private key for https")
    serve.set_defaults(func=None)

    def add(name: str, func: Command, help_text: str, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, aliases=list(aliases))
        _add_common(p)
        p.set_defaults(func=func)
        return p

    for commands in (library, runner, airgap, mirror, cache):
        commands.add_parsers(add)
    p = add("completion", completion.printer(parser), "print a shell completion script")
    p.add_argument("shell", choices=completion.SHELLS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        args.command, args.func, args.config = "version", library.cmd_version, None
    elif args.command is None:
        parser.error("the following arguments are required: command")
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if args.func is None:
        from registry.server.app import serve  # only `serve` needs the server (and llama.cpp) loaded

        return serve(settings)
    try:
        return asyncio.run(args.func(args, settings))
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc, aiohttp.ClientSSLError):  # a server answered, but not one this client trusts
            print(f"Error: {exc}", file=sys.stderr)
        else:
            print(f"Error: could not connect to corral at {base_url(settings.host)} — is `corral serve` running?",
                  file=sys.stderr)
        return 1
    except (ClientError, ModelfileError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
