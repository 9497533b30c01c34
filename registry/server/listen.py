"""The listening sockets, bound before anything else happens at startup.

`web.run_app` binds only after the application was built and started, which for corral means
after migrating, claiming and reconciling the store: a second server started on a port already
taken would change the store and only then fail. Binding first, and listening at once, makes the
port the first thing checked. Listening (not just binding) matters: with SO_REUSEADDR, which a
quick restart needs past TIME_WAIT, Linux lets two sockets bind one port as long as neither listens.
"""

from __future__ import annotations

import os
import socket

from registry.config import ListenAddress

BACKLOG = 128  # aiohttp's default


class ListenError(Exception):
    """The address cannot be listened on; the message is the one line to print."""


def listen(address: ListenAddress) -> list[socket.socket]:
    """Sockets listening on every address the host resolves to (all interfaces for an empty host)."""
    shown = f"[{address.host}]:{address.port}" if ":" in address.host else f"{address.host}:{address.port}"
    try:
        infos = socket.getaddrinfo(address.host or None, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {shown}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 socket takes IPv4
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {shown}: {reason}") from None
    return sockets
