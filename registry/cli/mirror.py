"""`corral pull`: fetch a model into corral's cache, with ollama-style per-layer progress bars.

Like `ollama pull`, the command only talks to the server (POST /api/pull); the server does the
fetching, so a pull interrupted on the client side keeps filling and a second `corral pull` (or
any ollama client) joins it instead of starting over.
"""

from __future__ import annotations

import argparse

from registry.cli.common import AddCommand, client
from registry.cli.progress import EventProgress, pull_label
from registry.config import Settings


async def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c, EventProgress(label=pull_label, skip_unstarted=True) as progress:
        async for event in c.stream("/api/pull", {"model": args.model, "insecure": args.insecure}):
            progress.update(event)
    return 0


def add_parsers(add: AddCommand) -> None:
    p = add("pull", cmd_pull, "pull a model from the upstream registry into corral's cache")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true",
                   help="use http for a registry host listed in CORRAL_ALLOWED_HOSTS")
