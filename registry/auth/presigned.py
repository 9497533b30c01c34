"""Presigned blob URLs: where ollama's downloader may read a blob's parts without a token.

With CORRAL_PULL_AUTH=1 every `/v2` read needs a token, but ollama sends its token only on the
blob HEAD and on the GET that resolves the blob's data URL; the ranged part GETs go to that URL's
`Location` with Go's default client and no `Authorization` (server/download.go, protocol doc
§1.1 step 7 and §3.2). registry.ollama.ai answers with a presigned object-storage URL; corral
does the same for its own path: `?expires=<unix seconds>&signature=<HMAC-SHA256>` over the
repository, the digest and the expiry. Such a URL opens exactly one blob GET, of that repository
and digest, until it expires; the auth middleware admits nothing else by it.

The HMAC key is derived from corral's ed25519 key (`<models>/id_ed25519`) instead of drawn per
process, so a restart during a pull does not turn the parts ollama is still fetching, or
retrying for about a minute, into 401s; it needs no file of its own, and replacing the key
revokes every URL handed out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.model.names import Digest

# ollama resolves the data URL once per blob and fetches every part from it, at most 16 at a time,
# each retried for about a minute: a part may start long after the resolve when a blob has more
# than 16 parts (over 16 GB). An hour covers a 360 GB blob at 100 MB/s; a pull that outlives it
# fails, and pulling again resumes the parts already fetched with a fresh URL.
URL_TTL = 3600.0
EXPIRES = "expires"
SIGNATURE = "signature"
_PURPOSE = b"corral presigned blob URL v1"


class PresignedBlobs:
    """Signs and checks blob URLs with one server's secret."""

    def __init__(self, secret: bytes, ttl: float = URL_TTL) -> None:
        self._secret = secret
        self.ttl = ttl

    @classmethod
    def from_key(cls, key: Ed25519PrivateKey) -> PresignedBlobs:
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        return cls(hmac.new(raw, _PURPOSE, hashlib.sha256).digest())

    def query(self, repository: str, digest: Digest, now: float | None = None) -> dict[str, str]:
        """The query parameters that make a GET of `repository`'s blob `digest` need no token."""
        expires = int((time.time() if now is None else now) + self.ttl)
        return {EXPIRES: str(expires), SIGNATURE: self._sign(repository, digest, expires)}

    def admits(self, repository: str, digest: str, query: Mapping[str, str]) -> bool:
        """Whether `query` was signed here for this repository and digest, and has not expired."""
        expires, signature = query.get(EXPIRES, ""), query.get(SIGNATURE, "")
        if not expires.isdigit() or int(expires) < time.time() or not Digest.is_valid(digest):
            return False
        expected = self._sign(repository, Digest.parse(digest), int(expires))
        return hmac.compare_digest(expected.encode(), signature.encode())

    def _sign(self, repository: str, digest: Digest, expires: int) -> str:
        message = f"{repository.lower()}\n{digest}\n{expires}".encode()
        mac = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
