"""What the cache holds and how it is doing: the JSON of GET /api/corral/status and the /corral page.

The page is rendered on the server as plain HTML — no JavaScript, so it works in any browser,
text browsers and locked-down kiosks included — and reloads itself with a meta refresh.
Everything shown comes from one `CacheStatus.collect` call, so the page and the JSON never disagree.
"""

from __future__ import annotations

import asyncio
import html
import shutil
import time
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from registry import __version__
from registry.cache.counters import HIT, MISS, CacheCounters
from registry.cache.lifecycle import Lifecycle
from registry.cache.prune import TagInfo, in_use
from registry.config import Settings
from registry.mirror.fills import InFlight
from registry.model.names import Digest
from registry.storage.catalog import Catalog
from registry.storage.db import BLOB_QUARANTINED, Blob, Node
from registry.storage.nodes import NodeRecord
from registry.units import format_byte_size

REFRESH_SECONDS = 10


class CacheStatus:
    """Gathers the status from the parts that own each number; see the module docstring."""

    def __init__(self, settings: Settings, lifecycle: Lifecycle, catalog: Catalog, in_flight: InFlight,
                 readers: Counter[Digest], counters: CacheCounters, node: NodeRecord | None = None) -> None:
        self.settings = settings
        self.node = node  # this server, in cluster mode
        self.lifecycle = lifecycle
        self.catalog = catalog
        self.in_flight = in_flight
        self.readers = readers  # open /v2 blob GETs per digest
        self.counters = counters

    async def collect(self) -> dict[str, Any]:
        lc, settings, counters, catalog = self.lifecycle, self.settings, self.counters, self.catalog
        usage = await lc.pruner.measure()
        disk = await asyncio.to_thread(shutil.disk_usage, catalog.store.root)
        busy = lc.pruner.busy_blobs()
        records = await catalog.list_models()
        users = Counter(str(layer.digest) for r in records for layer in set(r.manifest.all_layers))
        models = []
        for record in records:
            last = record.last_used or record.fetched_at or record.modified_at
            tag = TagInfo(record.name, str(record.manifest_digest), last, record.pinned)
            own = {str(layer.digest) for layer in record.manifest.all_layers if users[str(layer.digest)] == 1}
            models.append({
                "name": record.name.display_shortest(),
                "size": record.size,
                "digest": record.manifest_digest.hex,
                "pinned": record.pinned,
                "protected": lc.pruner.protection(tag) or in_use(own, busy),
                "last_used": record.last_used,
                "modified_at": record.modified_at,
            })
        models.sort(key=lambda m: m["last_used"] or 0.0, reverse=True)
        fills = []
        for digest in self.in_flight.digests():
            fill = self.in_flight.get(digest)
            if fill is not None:
                fills.append({"digest": str(digest), "size": fill.size, "completed": fill.completed,
                              "readers": self.readers.get(digest, 0)})
        async with catalog.sessions() as s:
            quarantined = (await s.execute(select(func.count()).select_from(Blob)
                                           .where(Blob.state == BLOB_QUARANTINED))).scalar_one()
        return {
            "version": __version__,
            "cache": {"used": usage.total, "stored": usage.stored, "filling": usage.filling,
                      "quota": settings.max_cache, "high_watermark": settings.high_watermark,
                      "low_watermark": settings.low_watermark},
            "disk": {"total": disk.total, "used": disk.used, "free": disk.free},
            "hits": {"requests": dict(counters.requests), "bytes": dict(counters.bytes), "ratio": counters.hit_ratio()},
            "models": models,
            "fills": fills,
            "quarantined": quarantined,
            "prune": lc.pruner.last_run,
            "scrub": {"interval": settings.scrub_interval, "checked": lc.scrubber.checked,
                      "failures": counters.scrub_failures, "last_pass": lc.scrubber.last_pass},
            "keep_warm": lc.keep_warm.last,
            "reconcile": lc.reconciled.to_json() if lc.reconciled is not None else None,
            "cluster": await self._cluster(),
        }

    async def _cluster(self) -> dict[str, Any] | None:
        """This node and every node in the catalogue (live or stale, with its last heartbeat); None
        for a single server."""
        if self.node is None:
            return None
        async with self.catalog.sessions() as s:
            rows = (await s.execute(select(Node).order_by(Node.started_at, Node.name))).scalars().all()
        now = time.time()
        nodes = [NodeRecord.from_row(row) for row in rows]
        return {
            "node": self.node.name,
            "on_duty": self.lifecycle.on_duty,
            "nodes": [{"id": n.id, "name": n.name, "host": n.host, "pid": n.pid, "url": n.advertise_url,
                       "models": n.models, "started_at": n.started_at, "heartbeat_at": n.heartbeat_at,
                       "state": n.state(now), "this": n.id == self.node.id} for n in nodes],
        }


def render_page(status: dict[str, Any]) -> str:
    cache, disk, hits = status["cache"], status["disk"], status["hits"]
    quota = cache["quota"]
    used = format_byte_size(cache["used"])
    if quota:
        used += f" of {format_byte_size(quota)} quota ({100 * cache['used'] / quota:.0f}%)"
    ratio = hits["ratio"]
    facts = [
        ("Cache", used + (f", {format_byte_size(cache['filling'])} of it filling" if cache["filling"] else "")),
        ("Disk", f"{format_byte_size(disk['used'])} used of {format_byte_size(disk['total'])}, "
                 f"{format_byte_size(disk['free'])} free"),
        ("Hit ratio", ("–" if ratio is None else f"{100 * ratio:.0f}%")
         + f" ({hits['requests'][HIT]} hits, {hits['requests'][MISS]} misses)"),
        ("Quarantined blobs", str(status["quarantined"])),
        ("Last prune", _when(status["prune"]["finished_at"]) if status["prune"] else "not yet"),
    ]
    rows = "".join(
        "<tr>"
        f"<td>{_e(m['name'])}</td>"
        f"<td class=num>{_e(format_byte_size(m['size']))}</td>"
        f"<td>{'pinned' if m['pinned'] else ''}</td>"
        f"<td>{_e(_when(m['last_used']) if m['last_used'] else 'never (added ' + _when(m['modified_at']) + ')')}</td>"
        f"<td>{_e(m['protected'] or '')}</td>"
        "</tr>"
        for m in status["models"]
    )
    fill_rows = "".join(
        f"<tr><td><code>{_e(f['digest'][7:19])}</code></td>"
        f"<td class=num>{_e(format_byte_size(f['completed']))} of {_e(format_byte_size(f['size']))}</td>"
        f"<td class=num>{f['readers']}</td></tr>"
        for f in status["fills"]
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>corral status</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ text-align: left; padding: .25em .8em; border-bottom: 1px solid #ddd; }}
td.num {{ text-align: right; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }}
dt {{ font-weight: 600; }}
dd {{ margin: 0; }}
</style>
</head>
<body>
<h1>corral {_e(status["version"])}</h1>
<section id="cache">
<h2>Cache</h2>
<dl>{"".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)}</dl>
</section>
<section id="fills">
<h2>Fills in progress ({len(status["fills"])})</h2>
{f"<table><thead><tr><th>Blob</th><th>Progress</th><th>Readers</th></tr></thead><tbody>{fill_rows}</tbody></table>"
 if fill_rows else "<p>None.</p>"}
</section>
{_nodes_section(status["cluster"])}
<section id="models">
<h2>Models ({len(status["models"])})</h2>
<table>
<thead><tr><th>Name</th><th>Size</th><th>Pin</th><th>Last used</th><th>Never evicted because</th></tr></thead>
<tbody>{rows}</tbody>
</table>
</section>
<footer>Refreshes every {REFRESH_SECONDS} s ·
<a href="/api/corral/status">JSON</a> · <a href="/metrics">metrics</a></footer>
</body>
</html>
"""


def _nodes_section(cluster: dict[str, Any] | None) -> str:
    if cluster is None:
        return ""
    this = " (this node, on background duty)" if cluster["on_duty"] else " (this node)"
    rows = "".join(
        "<tr>"
        f"<td>{_e(n['name'] + (this if n['this'] else ''))}</td>"
        f"<td>{_e(n['url'])}</td><td>{_e(n['host'])}</td><td>{_e(n['state'])}</td>"
        f"<td>{_e(_when(n['heartbeat_at']))}</td>"
        "</tr>"
        for n in cluster["nodes"]
    )
    return f"""<section id="nodes">
<h2>Nodes ({len(cluster["nodes"])})</h2>
<table>
<thead><tr><th>Node</th><th>URL</th><th>Host</th><th>State</th><th>Last heartbeat</th></tr></thead>
<tbody>{rows}</tbody>
</table>
</section>"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _when(ts: float) -> str:
    delta = max(0.0, time.time() - ts)
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= seconds:
            n = int(delta // seconds)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"
