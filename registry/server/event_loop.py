"""Which event loop the server runs on (`CORRAL_EVENT_LOOP`).

uvloop (libuv, its transports in C) takes less CPU per event than asyncio's own loop, and a cold
fill is a stream of events: every MiB received, written, hashed and sent to each reader. On this
2-vCPU machine an ollama-shaped cold pull cost 1.62 CPU-seconds per GB on uvloop against 1.79 on
asyncio's loop, with the same code (`bench/mirror --loop`). So `auto` takes uvloop where it is
installed (a dependency on Linux and macOS) and asyncio's loop elsewhere; either can be chosen.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class EventLoopUnavailable(Exception):
    """The loop asked for is not installed."""


def loop_factory(choice: str) -> tuple[str, LoopFactory | None]:
    """The name of the loop `choice` resolves to, and its factory (None: asyncio's default)."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                "CORRAL_EVENT_LOOP=uvloop, but uvloop is not installed: pip install uvloop, "
                "or set CORRAL_EVENT_LOOP=asyncio") from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop
