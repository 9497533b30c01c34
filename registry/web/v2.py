"""What a registry (`/v2/`) path names, and the header every registry reply carries.

Shared by the read side (the mirror) and the write side (push into corral): both address models
as `/v2/<ns>/<model>/…` under the default upstream's host, and both answer a malformed digest or
name with the registry's own error codes.
"""

from __future__ import annotations

from aiohttp import web

from registry.model.names import Digest, InvalidDigestError, InvalidNameError, ModelName
from registry.web.errors import DIGEST_INVALID, NAME_INVALID

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


def repository_name(host: str, request: web.Request, reference: str = "latest") -> ModelName:
    """The model a /v2 path designates: `host` (the default upstream's), namespace, model, reference."""
    try:
        return ModelName.from_parts(host, request.match_info["ns"], request.match_info["model"], reference)
    except InvalidNameError:
        raise NAME_INVALID() from None


def parse_digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except InvalidDigestError:
        raise DIGEST_INVALID(detail={"digest": text}) from None
