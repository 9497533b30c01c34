"""`corral run`, `corral ps`, `corral stop`: the inference commands, talking HTTP like ollama's CLI.

`run` loads the model first (pulling it when the server does not have it), then either answers
one prompt (arguments, plus piped stdin) or opens an interactive chat that keeps the
conversation until `/bye` or end of input. Output streams as the model produces it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from typing import Any

from registry.cli.client import ClientError, CorralClient
from registry.cli.common import AddCommand, client, table
from registry.cli.mirror import cmd_pull
from registry.config import Settings
from registry.units import format_byte_size, format_processor

_FOREVER_AFTER = 100 * 365 * 86400  # an expiry further away than this is keep_alive < 0
_HELP = """Available Commands:
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message."""


def _keep_alive(text: str | None) -> Any:
    """--keepalive as the API takes it: a Go duration string, or seconds when it is a number."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _chat_body(args: argparse.Namespace, messages: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "messages": messages}
    if args.keepalive is not None:
        body["keep_alive"] = _keep_alive(args.keepalive)
    if args.format:
        body["format"] = json.loads(args.format) if args.format.lstrip().startswith("{") else args.format
    if args.think is not None:
        body["think"] = args.think
    return body


async def _load(c: CorralClient, args: argparse.Namespace, settings: Settings) -> None:
    """Load the model (an empty chat), pulling it first when the server does not know it."""
    try:
        await c.request("POST", "/api/chat", _chat_body(args, []))
    except ClientError as exc:
        if exc.status != 404:
            raise
        await cmd_pull(argparse.Namespace(model=args.model, insecure=False), settings)
        await c.request("POST", "/api/chat", _chat_body(args, []))


async def _answer(c: CorralClient, args: argparse.Namespace, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Stream one assistant reply to stdout; return it as a message for the history."""
    content: list[str] = []
    thinking = False
    final: dict[str, Any] = {}
    async for chunk in c.stream("/api/chat", _chat_body(args, messages)):
        message = chunk.get("message", {})
        if message.get("thinking"):
            if not thinking:
                sys.stdout.write("Thinking...\n")
                thinking = True
            sys.stdout.write(message["thinking"])
        if message.get("content"):
            if thinking:
                sys.stdout.write("\n...done thinking.\n\n")
                thinking = False
            content.append(message["content"])
            sys.stdout.write(message["content"])
        for call in message.get("tool_calls", []):
            sys.stdout.write(json.dumps(call["function"]) + "\n")
        sys.stdout.flush()
        if chunk.get("done"):
            final = chunk
    sys.stdout.write("\n\n" if content and not "".join(content).endswith("\n") else "\n")
    if args.verbose:
        _summary(final)
    return {"role": "assistant", "content": "".join(content)}


def _summary(final: dict[str, Any]) -> None:
    """The timings ollama prints with --verbose (durations arrive in nanoseconds)."""
    lines = [
        ("total duration", f"{final.get('total_duration', 0) / 1e9:.6f}s"),
        ("load duration", f"{final.get('load_duration', 0) / 1e9:.6f}s"),
        ("prompt eval count", f"{final.get('prompt_eval_count', 0)} token(s)"),
        ("prompt eval duration", f"{final.get('prompt_eval_duration', 0) / 1e9:.6f}s"),
        ("eval count", f"{final.get('eval_count', 0)} token(s)"),
        ("eval duration", f"{final.get('eval_duration', 0) / 1e9:.6f}s"),
    ]
    if final.get("eval_duration"):
        lines.append(("eval rate", f"{final['eval_count'] / (final['eval_duration'] / 1e9):.2f} tokens/s"))
    for label, value in lines:
        print(f"{label + ':':<22}{value}", file=sys.stderr)


async def _read_message() -> str | None:
    """One user message from the terminal; None at end of input. \"\"\" starts a multi-line one."""
    try:
        line = await asyncio.to_thread(input, ">>> ")
    except EOFError:
        return None
    if not line.startswith('"""'):
        return line
    parts = [line[3:]]
    while not parts[-1].endswith('"""'):
        try:
            parts.append(await asyncio.to_thread(input, "... "))
        except EOFError:
            return None
    parts[-1] = parts[-1][:-3]
    return "\n".join(parts).strip("\n")


async def _interactive(c: CorralClient, args: argparse.Namespace) -> None:
    messages: list[dict[str, Any]] = []
    while (text := await _read_message()) is not None:
        command = text.strip()
        if command in ("/bye", "/exit"):
            return
        if command in ("/?", "/help"):
            print(_HELP)
            continue
        if command == "/clear":
            messages.clear()
            print("Cleared session context")
            continue
        if not command:
            continue
        messages.append({"role": "user", "content": text})
        messages.append(await _answer(c, args, messages))


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    prompt = " ".join(args.prompt)
    if not sys.stdin.isatty():
        piped = await asyncio.to_thread(sys.stdin.read)
        prompt = f"{piped}\n{prompt}".strip() if prompt else piped.strip()
    async with client(settings) as c:
        await _load(c, args, settings)
        if prompt:
            await _answer(c, args, [{"role": "user", "content": prompt}])
        else:
            await _interactive(c, args)
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
    add("ps", cmd_ps, "list running models")
    p = add("stop", cmd_stop, "stop a running model")
    p.add_argument("model")
