"""`GatedResolver`: the address check repeated where a connection's name is resolved.

aiohttp resolves a host name inside the connector, right before it connects; wrapping its
resolver there means the addresses corral connects to are exactly the addresses that were
checked, so a name that answers differently a second time (DNS rebinding) gains nothing. The
connector's DNS cache keeps only what passed. IP literals never reach a resolver: the gate
checks them before the request.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult

Screen = Callable[[str, int, list[ResolveResult]], list[ResolveResult]]


class GatedResolver(AbstractResolver):
    """Resolves with `inner` (the system resolver, so /etc/hosts applies), then keeps what `screen`
    allows or raises its refusal."""

    def __init__(self, screen: Screen, inner: AbstractResolver | None = None) -> None:
        self.screen = screen
        self.inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[ResolveResult]:
        return self.screen(host, port, await self.inner.resolve(host, port, family))

    async def close(self) -> None:
        await self.inner.close()
