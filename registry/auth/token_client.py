"""The client side of a registry's Bearer challenge, signed the way ollama signs it (§3.1).

On a 401 the registry names a realm; the client appends `service`, `scope`, `ts` and a random
`nonce` (keys sorted, like Go's url.Values.Encode), signs `GET,<that URL>,<zero-sum>` with its
ed25519 key and sends the signature as `Authorization`. The realm must be on the host the client
was talking to, or the token could be phished by a registry naming someone else's token server;
the request goes through the egress gate like every other, and a redirect is not followed (the
signature names this URL, and it must not travel elsewhere). The URL is sent exactly as signed
(yarl must not re-encode it), or the signature would not match.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yarl import URL

from registry.auth.keys import sign_challenge, token_request_data
from registry.egress.gate import Egress
from registry.web.errors import registry_reason

_PARAM = re.compile(r'(\w+)="([^"]*)"')


class TokenError(Exception):
    """The registry refused to issue a token, or its challenge cannot be answered."""


@dataclass(frozen=True)
class Challenge:
    realm: str
    service: str
    scope: str


def parse_challenge(header: str) -> Challenge | None:
    """`Bearer realm="…",service="…",scope="…"` → Challenge; None for other schemes (Basic)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params = dict(_PARAM.findall(rest))
    if not params.get("realm"):
        return None
    return Challenge(params["realm"], params.get("service", ""), params.get("scope", ""))


def token_url(challenge: Challenge, now: float | None = None) -> str:
    query = [("nonce", base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode())]
    query += [("scope", s) for s in challenge.scope.split(" ")]
    query += [("service", challenge.service), ("ts", str(int(time.time() if now is None else now)))]
    realm = challenge.realm
    return f"{realm}{'&' if '?' in realm else '?'}{urlencode(sorted(query, key=lambda kv: kv[0]))}"


async def fetch_token(session: aiohttp.ClientSession, challenge: Challenge, original_host: str,
                      key: Ed25519PrivateKey, egress: Egress) -> str:
    """Answer `challenge` for a request that went to `original_host` (host[:port])."""
    url = token_url(challenge)
    realm_host = urlsplit(url).netloc
    if realm_host != original_host:
        raise TokenError(f"realm host {realm_host!r} does not match original host {original_host!r}")
    signature = sign_challenge(key, token_request_data(url))
    target = URL(url, encoded=True)
    async with await egress.registry_request(session, "GET", target, registry=target,
                                             headers={"Authorization": signature}) as resp:
        body = await resp.text()
        if 300 <= resp.status < 400:
            raise TokenError(f"the token endpoint answered {resp.status} (a redirect), which corral does not follow")
        if resp.status >= 400:
            raise TokenError(f"{resp.status}: {registry_reason(body.encode())}")
    try:
        token = json.loads(body).get("token") or ""
    except (ValueError, AttributeError):
        token = ""
    if not token:
        raise TokenError("token response has no token")
    return token
