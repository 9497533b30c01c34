"""Which addresses a data URL may lead to: public unicast only, IPv6 forms judged by the IPv4 inside."""

from __future__ import annotations

import pytest

from registry.egress.addresses import is_public, kind_of, parse_ip

NOT_PUBLIC = [
    "127.0.0.1", "127.8.9.10", "::1",  # loopback
    "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1", "fd12:3456::1",  # private, ULA
    "169.254.169.254", "fe80::1", "fe80::1%1",  # link-local (the cloud metadata address among them)
    "0.0.0.0", "::",  # unspecified
    "224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1",  # multicast, even "global" multicast
    "240.0.0.1", "255.255.255.255", "100.64.0.1",  # reserved, broadcast, shared (CGNAT)
    "192.0.2.1", "198.51.100.7", "2001:db8::1",  # documentation
    "fec0::1",  # site-local
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::7f00:1", "64:ff9b::a00:1",  # NAT64 of loopback and 10.0.0.1
    "2002:7f00:1::1", "2002:c0a8:101::1",  # 6to4 of loopback and 192.168.1.1
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "2001::1",  # Teredo
]
PUBLIC = ["8.8.8.8", "104.16.1.1", "2606:4700::1111", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_local_and_special_addresses_are_not_public(address: str) -> None:
    ip = parse_ip(address)
    assert ip is not None
    assert not is_public(ip)
    assert kind_of(ip)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_unicast_is_public(address: str) -> None:
    ip = parse_ip(address)
    assert ip is not None and is_public(ip)


@pytest.mark.parametrize(("host", "address"), [
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"), ("[::1]", "::1"), ("[::ffff:7f00:1]", "::ffff:7f00:1"),
])
def test_literals_in_every_spelling_are_recognised(host: str, address: str) -> None:
    assert str(parse_ip(host)) == address


@pytest.mark.parametrize("host", ["registry.ollama.ai", "localhost", "1e100.net", "deadbeef", "cafe.example"])
def test_names_are_not_literals(host: str) -> None:
    assert parse_ip(host) is None


def test_kind_names_the_reason() -> None:
    assert kind_of(parse_ip("127.0.0.1")) == "a loopback address"  # type: ignore[arg-type]
    assert kind_of(parse_ip("::ffff:10.0.0.1")) == "a private address"  # type: ignore[arg-type]
    assert kind_of(parse_ip("169.254.169.254")) == "a link-local address"  # type: ignore[arg-type]
