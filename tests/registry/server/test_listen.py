"""The listening sockets: taken before anything else, and a taken port is one line, not a traceback."""

from __future__ import annotations

import socket

import pytest

from registry.config import ListenAddress
from registry.server.listen import ListenError, listen


def test_a_port_another_process_listens_on_is_one_line() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ListenError) as refused:
            listen(ListenAddress("http", "127.0.0.1", port))
    assert str(refused.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"


def test_two_servers_starting_together_cannot_both_bind() -> None:
    """SO_REUSEADDR lets two sockets bind one port while neither listens; ours listen at once."""
    (first,) = listen(ListenAddress("http", "127.0.0.1", 0))
    try:
        port = first.getsockname()[1]
        with pytest.raises(ListenError, match="address already in use"):
            listen(ListenAddress("http", "127.0.0.1", port))
    finally:
        first.close()
    (again,) = listen(ListenAddress("http", "127.0.0.1", port))  # and a restart need not wait
    again.close()


def test_an_ipv6_address_is_shown_in_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        (first,) = listen(ListenAddress("http", "::1", 0))
    except ListenError:
        pytest.skip("no IPv6 loopback here")
    try:
        port = first.getsockname()[1]
        with pytest.raises(ListenError) as refused:
            listen(ListenAddress("http", "::1", port))
        assert str(refused.value) == f"cannot listen on [::1]:{port}: address already in use"
    finally:
        first.close()
