"""What every command module of the CLI shares: the command signature, the server client, settings
and the formatting of tables and ages.

It exists so that the command modules and main.py (which assembles the parser from them) both
import downward from here; when these lived in main.py, main and the command modules imported
each other.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from registry.cli.client import CorralClient, base_url
from registry.config import Settings, load_settings

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]


class AddCommand(Protocol):
    """How a command module registers its commands: main.py passes one to each `add_parsers`."""

    def __call__(
        self, name: str, func: Command, help_text: str, aliases: tuple[str, ...] = ()
    ) -> argparse.ArgumentParser: ...


CLIENT_SETTINGS = ("host", "admin_token", "models", "nohistory")  # all that a command other than `serve` reads


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings as the config file and environment give them, with the command-line flags on top;
    for a client command only those it reads, so a server-only setting cannot break it."""
    overrides = {k: getattr(args, k, None) for k in ("host", "models", "tls_cert", "tls_key")}
    only = None if args.command == "serve" else CLIENT_SETTINGS
    return load_settings(config_file=getattr(args, "config", None), overrides=overrides, only=only)


def client(settings: Settings) -> CorralClient:
    """A client for the server the settings name (OLLAMA_HOST), sending the admin token when set."""
    return CorralClient(base_url(settings.host), settings.admin_token)


def table(rows: list[list[str]]) -> str:
    """Rows as ollama prints them: columns left-aligned, four spaces apart, no trailing blanks."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("    ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def human_ago(ts: float) -> str:
    """How long ago a Unix time was, in ollama's words ("3 hours ago")."""
    delta = max(0.0, time.time() - ts)
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= seconds:
            n = int(delta // seconds)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "Less than a minute ago" if delta >= 1 else "Less than a second ago"
