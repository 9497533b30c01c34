"""`corral pull`: fetch a model into corral's cache, with ollama-style per-layer progress bars.

Like `ollama pull`, the command only talks to the server (POST /api/pull); the server does the
fetching, so a pull interrupted on the client side keeps filling and a second `corral pull` (or
any ollama client) joins it instead of starting over.
"""

from __future__ import annotations

import argparse

from registry.cli.common import AddCommand, client
from registry.cli.progress import ProgressBars
from registry.config import Settings


async def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    bars = ProgressBars()
    try:
        async with client(settings) as c:
            async for event in c.stream("/api/pull", {"model": args.model, "insecure": args.insecure}):
                bars.update(event)
    finally:
        bars.close()
    return 0


def add_parsers(add: AddCommand) -> None:
    p = add("pull", cmd_pull, "pull a model from the upstream registry into corral's cache")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true",
                   help="use http for a registry host listed in CORRAL_ALLOWED_HOSTS")
