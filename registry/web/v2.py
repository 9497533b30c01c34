"""What a registry (`/v2/`) path names, and the header every registry reply carries.

Shared by the read side (the mirror) and the write side (push into corral): both address models
as `/v2/<ns>/<model>/…` under registry.ollama.ai, the host a name without one has, whatever
CORRAL_UPSTREAM is: a model a client pulls through `/v2/library/m0/…` is the `m0` that `corral
pull m0` stores, one name for one model. Both answer a malformed digest or name with the
registry's own error codes.
"""

from __future__ import annotations

from aiohttp import web

from registry.model.names import DEFAULT_HOST, Digest, InvalidDigestError, InvalidNameError, ModelName
from registry.web.errors import DIGEST_INVALID, NAME_INVALID

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


def repository_name(request: web.Request, reference: str = "latest") -> ModelName:
    """The model a /v2 path designates: registry.ollama.ai's namespace/model at `reference`."""
    try:
        return ModelName.from_parts(DEFAULT_HOST, request.match_info["ns"], request.match_info["model"], reference)
    except InvalidNameError:
        raise NAME_INVALID() from None


def parse_digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except InvalidDigestError:
        raise DIGEST_INVALID(detail={"digest": text}) from None
