"""One conversation with a model over /api/chat: what `corral run` sends and how an answer is shown.

Shared by the one-prompt form of `corral run` and the interactive chat (registry.cli.interactive),
which changes these options with its slash commands as ollama's runOptions are changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from registry.cli.client import ClientError, CorralClient
from registry.cli.mirror import cmd_pull
from registry.cli.progress import Progress, terminal_size
from registry.cli.wordwrap import WordWrap
from registry.config import Settings


@dataclass
class ChatOptions:
    """Everything that shapes the next request of a conversation."""

    model: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    loaded_messages: list[dict[str, Any]] = field(default_factory=list)  # the model's own MESSAGEs, for /save
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    format: Any = None
    think: bool | str | None = None
    keep_alive: Any = None
    verbose: bool = False
    wordwrap: bool = True

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        for key, value in (("options", self.options), ("format", self.format), ("think", self.think),
                           ("keep_alive", self.keep_alive)):
            if value is not None and value != {}:
                body[key] = value
        return body


def keep_alive(text: str | None) -> Any:
    """--keepalive as the API takes it: a Go duration string, or seconds when it is a number."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def response_format(text: str | None) -> Any:
    """--format: "json", or a JSON schema given inline."""
    if not text:
        return None
    return json.loads(text) if text.lstrip().startswith("{") else text


async def show_or_pull(c: CorralClient, name: str, settings: Settings, insecure: bool = False) -> dict[str, Any]:
    """The model's /api/show answer, pulling it first when the server does not have it (as ollama's
    run does)."""
    try:
        return await c.request("POST", "/api/show", {"model": name})
    except ClientError as exc:
        if exc.status != 404:
            raise
    await cmd_pull(argparse.Namespace(model=name, insecure=insecure), settings)
    return await c.request("POST", "/api/show", {"model": name})


async def load(c: CorralClient, opts: ChatOptions) -> None:
    """Load the model with an empty chat, a spinner turning meanwhile and wiped afterwards."""
    async with Progress() as progress:
        progress.step("")
        try:
            await c.request("POST", "/api/chat", opts.body([]))
        finally:
            progress.stop(clear=True)


def _stdout_width() -> int:
    return terminal_size(sys.stdout).columns


async def answer(c: CorralClient, opts: ChatOptions) -> dict[str, Any]:
    """Stream the reply to `opts.messages` to stdout, a spinner turning until the first words come;
    return it as a message for the history. Cancelling it closes the request, which stops the
    model (the server ends a generation whose client has gone)."""
    wrap = WordWrap(_stdout_width()) if opts.wordwrap else None
    content: list[str] = []
    thinking: list[str] = []
    in_thought = False
    final: dict[str, Any] = {}

    def show(text: str) -> None:
        sys.stdout.write(wrap.feed(text) if wrap else text)

    async with Progress() as progress:
        progress.step("")
        try:
            async for chunk in c.stream("/api/chat", opts.body(opts.messages)):
                progress.stop(clear=True)
                message = chunk.get("message", {})
                if message.get("thinking"):
                    if not in_thought:
                        sys.stdout.write("Thinking...\n")
                        in_thought = True
                    thinking.append(message["thinking"])
                    show(message["thinking"])
                if in_thought and (message.get("content") or message.get("tool_calls")):
                    sys.stdout.write("\n...done thinking.\n\n" if not "".join(thinking).endswith("\n")
                                     else "...done thinking.\n\n")
                    in_thought = False
                    wrap = WordWrap(_stdout_width()) if opts.wordwrap else None
                for call in message.get("tool_calls", []):
                    sys.stdout.write(json.dumps(call["function"]) + "\n")
                if message.get("content"):
                    content.append(message["content"])
                    show(message["content"])
                sys.stdout.flush()
                if chunk.get("done"):
                    final = chunk
        finally:
            progress.stop(clear=True)
    sys.stdout.write("\n\n" if content and not "".join(content).endswith("\n") else "\n")
    sys.stdout.flush()
    if opts.verbose:
        print_summary(final)
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if thinking:
        reply["thinking"] = "".join(thinking)
    return reply


def print_summary(final: dict[str, Any]) -> None:
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
