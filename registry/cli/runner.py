"""`corral run`, `corral ps`, `corral stop`: the inference commands, talking HTTP like ollama's CLI.

`run` asks for the model (pulling it when the server does not have it), then either answers one
prompt (arguments, plus piped stdin) or opens the interactive chat (registry.cli.interactive).
Output streams as the model produces it, wrapped at the terminal's width.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime

from registry.cli.chat import ChatOptions, answer, keep_alive, load, response_format, show_or_pull
from registry.cli.client import ClientError
from registry.cli.common import AddCommand, client, table
from registry.cli.interactive import InteractiveChat, print_loaded_messages
from registry.cli.lineinput import LineInput, history_file
from registry.config import Settings
from registry.units import format_byte_size, format_processor

_FOREVER_AFTER = 100 * 365 * 86400  # an expiry further away than this is keep_alive < 0


def _options(args: argparse.Namespace, wordwrap: bool) -> ChatOptions:
    return ChatOptions(model=args.model, format=response_format(args.format), think=args.think,
                       keep_alive=keep_alive(args.keepalive), verbose=args.verbose, wordwrap=wordwrap)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """As `ollama run`: a prompt in the arguments or piped in gets one answer; a terminal on both
    ends with no prompt gets the interactive chat."""
    prompt = " ".join(args.prompt)
    terminal_in, terminal_out = sys.stdin.isatty(), sys.stdout.isatty()
    if not terminal_in:
        piped = await asyncio.to_thread(sys.stdin.read)
        prompt = f"{piped}\n{prompt}".strip() if prompt else piped.strip()
    opts = _options(args, wordwrap=terminal_out and not args.nowordwrap)
    async with client(settings) as c:
        info = await show_or_pull(c, args.model, settings, args.insecure)
        if prompt:
            opts.messages = [{"role": "user", "content": prompt}]
            await answer(c, opts)
        elif terminal_in and terminal_out:
            await load(c, opts)
            opts.loaded_messages = list(info.get("messages", []))
            print_loaded_messages(opts.loaded_messages)
            lines = LineInput(history_file(), recording=not settings.nohistory)
            await InteractiveChat(c, opts, lines).run()
        else:
            await load(c, opts)
    return 0


def _until(expires_at: str) -> str:
    remaining = datetime.fromisoformat(expires_at).timestamp() - time.time()
    if remaining <= 0:
        return "Stopping..."
    if remaining > _FOREVER_AFTER:
        return "Forever"
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if remaining >= seconds:
            n = int(remaining // seconds)
            return f"{n} {unit}{'s' if n != 1 else ''} from now"
    return "Less than a second from now"


async def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        data = await c.request("GET", "/api/ps")
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in data["models"]:
        digest = m["digest"].removeprefix("sha256:")
        rows.append(
            [
                m["name"],
                digest[:12],
                format_byte_size(m["size"]),
                format_processor(m["size"], m["size_vram"]),
                str(m["context_length"]),
                _until(m["expires_at"]),
            ]
        )
    print(table(rows))
    return 0


async def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        try:
            await c.request("POST", "/api/generate", {"model": args.model, "keep_alive": 0})
        except ClientError as exc:
            if "not found" in str(exc):
                raise ClientError(exc.status, f'couldn\'t find model "{args.model}" to stop') from None
            raise
    return 0


def add_parsers(add: AddCommand) -> None:
    p = add("run", cmd_run, "run a model: answer a prompt, or chat interactively")
    p.add_argument("model")
    p.add_argument("prompt", nargs="*", help="prompt (otherwise an interactive chat starts)")
    p.add_argument("--verbose", action="store_true", help="show timings after each response")
    p.add_argument("--keepalive", help="how long the model stays loaded (e.g. 5m, 1h, -1)")
    p.add_argument("--format", help='response format: "json" or a JSON schema')
    p.add_argument("--think", action=argparse.BooleanOptionalAction, default=None, help="thinking on/off")
    p.add_argument("--nowordwrap", action="store_true", help="do not wrap words to the next line")
    p.add_argument("--insecure", action="store_true", help="pull the model over http if it must be pulled")
    add("ps", cmd_ps, "list running models")
    p = add("stop", cmd_stop, "stop a running model")
    p.add_argument("model")
