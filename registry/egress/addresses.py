"""Which IP addresses a data URL may lead to: public unicast only.

A registry may have a blob's bytes served from anywhere on the internet (registry.ollama.ai
answers with presigned object-storage URLs), but its redirect must not make corral reach what
only corral can reach: its own loopback, the LAN, a link-local metadata service. So an address
passes only when it is globally routable unicast. IPv6 forms that carry an IPv4 address
(IPv4-mapped, NAT64, 6to4) are judged by the IPv4 address inside, which is where the packets
end up. Python's `is_global` alone is not enough: it calls multicast, site-local and (in some
versions) NAT64 addresses global.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def parse_ip(host: str) -> IPAddress | None:
    """The address a URL's host names literally, or None for a name.

    Besides the canonical forms this recognises IPv4 in the legacy notations `inet_aton` accepts
    (`127.1`, `2130706433`, `0x7f.1`), which some resolvers and proxies still map onto an address.
    """
    text = host.strip("[]")
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(text)
    if text and all(c in "0123456789abcdefx." for c in text.lower()) and text[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, site-local, shared (CGNAT),
    unspecified, multicast, documentation or reserved, in IPv4 or IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False  # a zone index only makes sense on a local link
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
        if ip.sixtofour is not None and not is_public(ip.sixtofour):
            return False
        if ip.is_site_local:
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                 or ip.is_link_local or ip.is_private)


def kind_of(ip: IPAddress) -> str:
    """A few words naming why an address is not public, for error messages."""
    plain = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    plain = plain or ip
    for test, words in (("is_loopback", "a loopback address"), ("is_link_local", "a link-local address"),
                        ("is_unspecified", "the unspecified address"), ("is_multicast", "a multicast address"),
                        ("is_private", "a private address")):
        if getattr(plain, test):
            return words
    return "not a public address"
