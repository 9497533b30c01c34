"""`GET /v2/_catalog` and `GET /v2/<name>/tags/list`: what this registry holds, as the
distribution spec lists it.

Both list the catalogue, not the upstream: registry.ollama.ai answers neither, and a list that
depended on the upstream would change with the network. The repositories are the ones `/v2`
paths serve, registry.ollama.ai's `<namespace>/<model>` (`web.v2.repository_name`); models kept
under another host are not reachable by a `/v2` path, so they are not listed.

Pages as distribution v3 cuts them: entries sorted lexically, `last` starts after an entry, `n`
limits a page, and a page with more entries after it carries `Link: <path?last=…&n=…>;
rel="next"`. `_catalog` pages hold 100 entries unless `n` says otherwise, and at most 1000;
`tags/list` returns every tag unless `n` is given. An `n` that is not a whole number from 0 up
(or over the catalogue's 1000) is PAGINATION_NUMBER_INVALID; an unknown repository NAME_UNKNOWN.
Who may list is the auth middleware's business, as for every `/v2` read (CORRAL_PULL_AUTH).
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from aiohttp import web

from registry.model.names import DEFAULT_HOST
from registry.storage.catalog import Catalog
from registry.web.errors import NAME_UNKNOWN, PAGINATION_NUMBER_INVALID
from registry.web.v2 import API_VERSION_HEADER, repository_name

CATALOG_PAGE = 100  # distribution's defaultReturnedEntries
CATALOG_MAX = 1000  # distribution's default catalog.maxentries
_COUNT = re.compile(r"[+-]?\d+")


class V2Listing:
    """The listing side of `/v2/`, over the catalogue."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def catalog_page(self, request: web.Request) -> web.Response:
        n = _count(request, maximum=CATALOG_MAX)
        repositories = sorted(f"{ns}/{model}" for ns, model in await self.catalog.repositories(DEFAULT_HOST))
        return _page(request, "repositories", {}, repositories, CATALOG_PAGE if n is None else n)

    async def tags(self, request: web.Request) -> web.Response:
        name = repository_name(request)
        tags = sorted(await self.catalog.tags_of(name))
        path_name = f"{request.match_info['ns']}/{request.match_info['model']}"
        if not tags:
            raise NAME_UNKNOWN(detail={"name": path_name})
        return _page(request, "tags", {"name": path_name}, tags, _count(request, maximum=None))


def _count(request: web.Request, maximum: int | None) -> int | None:
    """The `n` query parameter: None when absent or empty (Go's q.Get gives "" for both)."""
    text = request.query.get("n", "")
    if not text:
        return None
    if not _COUNT.fullmatch(text):
        raise PAGINATION_NUMBER_INVALID(detail={"n": text})
    n = int(text)
    if n < 0 or (maximum is not None and n > maximum):
        raise PAGINATION_NUMBER_INVALID(detail={"n": n})
    return n


def _page(request: web.Request, key: str, head: dict[str, str], entries: list[str], n: int | None) -> web.Response:
    """`entries` after `last`, `n` of them at most, with the Link to the next page when one follows."""
    last = request.query.get("last", "")
    after = [entry for entry in entries if entry > last] if last else entries
    headers = dict(API_VERSION_HEADER)
    if n is not None:
        if len(after) > n > 0:
            query = urlencode([("last", after[n - 1]), ("n", str(n))])
            headers["Link"] = f'<{request.path}?{query}>; rel="next"'
        after = after[:n]
    return web.json_response({**head, key: after}, headers=headers)
