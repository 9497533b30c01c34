"""The /corral status page: `CacheStatus.collect`'s dictionary rendered as one HTML document.

Plain HTML and CSS drawn on the server — no JavaScript, so it works in any browser, text
browsers and locked-down kiosks included — reloaded by a meta refresh. Meters are CSS bars
(`role="meter"` for assistive technology), charts inline SVG (`cache.charts`). Every value taken
from the status is escaped: model names, registry errors and digests come from outside.
"""

from __future__ import annotations

import html
import time
from typing import Any

from registry.cache.charts import line_chart
from registry.cache.counters import HIT, MISS
from registry.units import format_byte_size

REFRESH_SECONDS = 10
CHART_BINS = 144  # ten minutes each over a day
_SUMMED = ("seconds", "hit_bytes", "miss_bytes", "upstream_bytes")
_FOREVER = 100 * 365 * 86400  # a keep-alive this long is "forever", as ollama's CLI says

_STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933;
  background: #f3f4f6; }
header { display: flex; align-items: baseline; gap: 1em; padding: .8em 1.5em; background: #1f2933; color: #f9fafb; }
header h1 { margin: 0; font-size: 1.25em; font-weight: 600; }
header .meta { margin-left: auto; color: #cbd2d9; font-size: .9em; }
header a { color: #9fd3ff; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1em; padding: 1em 1.5em; }
section { background: #fff; border: 1px solid #e4e7eb; border-radius: 6px; padding: .9em 1.1em; min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { margin: 0 0 .6em; font-size: 1em; font-weight: 600; text-transform: uppercase; letter-spacing: .04em;
  color: #52606d; }
.label { display: flex; justify-content: space-between; gap: 1em; margin: .5em 0 .25em; }
.label span:last-child { color: #52606d; text-align: right; }
.meter { display: flex; position: relative; height: 12px; background: #e4e7eb; border-radius: 6px; overflow: hidden; }
.meter > span { display: block; height: 100%; }
.c-cache { background: #2680c2; } .c-warn { background: #de911d; } .c-full { background: #ba2525; }
.c-other { background: #9aa5b1; } .c-free { background: #e4e7eb; }
.meter .mark { position: absolute; top: 0; bottom: 0; width: 2px; background: #1f2933; opacity: .5; }
.meter.small { height: 8px; min-width: 120px; }
.legend { margin-top: .35em; color: #52606d; font-size: .85em; }
.legend i { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin: 0 .3em 0 .8em;
  vertical-align: -1px; }
.legend i:first-child { margin-left: 0; }
.tiles { display: grid; grid-template-columns: repeat(2, 1fr); gap: .6em; }
.tile { background: #f5f7fa; border-radius: 4px; padding: .5em .7em; }
.tile b { display: block; font-size: 1.35em; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile span { color: #52606d; font-size: .85em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: .8em 0 0; }
dt { color: #52606d; } dd { margin: 0; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
th { color: #52606d; font-weight: 600; font-size: .85em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.error { color: #ba2525; font-size: .9em; overflow-wrap: anywhere; }  /* long error words must not widen the card */
.none { color: #7b8794; margin: .3em 0; }
.badge { display: inline-block; padding: 0 .55em; border-radius: 9px; font-size: .85em; font-weight: 600;
  white-space: nowrap; }
td.when { white-space: nowrap; }
.badge.online { background: #e3f9e5; color: #207227; } .badge.unreachable { background: #ffe3e3; color: #ba2525; }
.badge.idle { background: #e4e7eb; color: #52606d; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 1em; }
figure { margin: 0; } figcaption { color: #52606d; margin-bottom: .2em; }
svg.chart { display: block; width: 100%; height: auto; }
svg.chart .line { fill: none; stroke: #2680c2; stroke-width: 1.5; }
svg.chart .area { fill: #2680c2; opacity: .12; }
svg.chart .dot { fill: #2680c2; }
svg.chart .grid { stroke: #e4e7eb; } svg.chart .axis { stroke: #9aa5b1; }
svg.chart text { font: 10px system-ui, sans-serif; fill: #52606d; }
code { font-size: .9em; }
"""


def render_page(status: dict[str, Any]) -> str:
    now = time.time()
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>corral status</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>corral {_e(status["version"])}</h1><span>status</span>
<span class="meta">{_e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)))} · refreshes every
{REFRESH_SECONDS} s · <a href="/api/corral/status">JSON</a> · <a href="/metrics">metrics</a></span></header>
<main>
{_storage(status)}
{_traffic(status)}
{_upstream(status["upstream"], now)}
{_runner(status["runner"], now)}
{_charts(status["history"], now)}
{_fills(status["fills"])}
{_nodes(status["cluster"], now)}
{_models(status["models"])}
</main>
</body>
</html>
"""


def _storage(status: dict[str, Any]) -> str:
    cache, disk = status["cache"], status["disk"]
    used, quota = cache["used"], cache["quota"]
    if quota:
        level = "c-full" if used >= quota else "c-warn" if used >= cache["high_watermark"] * quota else "c-cache"
        mark = f'<span class="mark" style="left:{_pct(cache["high_watermark"])}"></span>'
        quota_meter = (
            f'<div class="label"><span>Cache against quota</span><span>{_size(used)} of {_size(quota)} '
            f"({100 * used / quota:.0f}%)</span></div>"
            f'{_meter("quota-meter", "cache against quota", used, quota, [(level, used)], mark)}'
            f'<div class="legend">pruning starts at {100 * cache["high_watermark"]:.0f}% '
            f'and stops at {100 * cache["low_watermark"]:.0f}%</div>'
        )
    else:
        quota_meter = ('<div class="label"><span>Cache against quota</span><span>no quota set '
                       "(CORRAL_MAX_CACHE); the disk is the limit</span></div>")
    other = max(disk["used"] - used, 0)
    disk_meter = (
        f'<div class="label"><span>Cache against disk</span><span>{_size(disk["free"])} free of '
        f"{_size(disk['total'])}</span></div>"
        f'{_meter("disk-meter", "cache against disk", used, disk["total"], [("c-cache", used), ("c-other", other)])}'
        f'<div class="legend"><i class="c-cache"></i>cache {_size(used)}<i class="c-other"></i>other files '
        f'{_size(other)}<i class="c-free"></i>free {_size(disk["free"])}</div>'
    )
    prune = status["prune"]
    facts = [
        ("Filling", _size(cache["filling"]) if cache["filling"] else "nothing"),
        ("Quarantined blobs", str(status["quarantined"])),
        ("Last prune", _ago(prune["finished_at"]) if prune else "not yet"),
    ]
    return f"""<section id="storage"><h2>Storage</h2>
{quota_meter}
{disk_meter}
{_facts(facts)}
</section>"""


def _traffic(status: dict[str, Any]) -> str:
    traffic, hits = status["traffic"], status["hits"]
    ratio = traffic["hit_ratio_by_bytes"]
    tiles = [
        (_size(traffic["served_from_cache"]), "served from cache"),
        (_size(traffic["fetched_upstream"]), "fetched upstream"),
        (_size(traffic["saved"]), "bandwidth saved"),
        ("–" if ratio is None else f"{100 * ratio:.0f}%", "hit ratio by bytes"),
    ]
    request_ratio = hits["ratio"]
    facts = [
        ("Served while filling", _size(traffic["served_while_filling"])),
        ("Hit ratio by requests", ("–" if request_ratio is None else f"{100 * request_ratio:.0f}%")
         + f" ({hits['requests'][HIT]} hits, {hits['requests'][MISS]} misses)"),
    ]
    return f"""<section id="traffic"><h2>Traffic since start</h2>
<div class="tiles">{"".join(f'<div class="tile"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in tiles)}</div>
{_facts(facts)}
</section>"""


def _upstream(upstream: dict[str, Any], now: float) -> str:
    badge = {"online": "online", "unreachable": "unreachable"}
    rows = "".join(
        "<tr>"
        f"<td><code>{_e(r['registry'])}</code></td>"
        f'<td><span class="badge {badge.get(r["state"], "idle")}">{_e(r["state"])}</span></td>'
        f'<td class="when">{_e(_ago(r["last_ok"], now)) if r["last_ok"] else "–"}</td>'
        + (f'<td class="error">{_e(r["last_error"])} ({_e(_ago(r["last_error_at"], now))})</td>'
           if r["last_error"] else "<td>–</td>")
        + "</tr>"
        for r in upstream["registries"]
    )
    mode = ('<p class="none">Offline (CORRAL_OFFLINE): only the hosts in CORRAL_ALLOWED_HOSTS are contacted.</p>'
            if upstream["offline"] else "")
    return f"""<section id="upstream"><h2>Upstream</h2>
{mode}<table><thead><tr><th>Registry</th><th>State</th><th>Last answer</th><th>Last error</th></tr></thead>
<tbody>{rows}</tbody></table>
</section>"""


def _runner(runner: dict[str, Any], now: float) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{_e(m['name'])}</td>"
        f'<td class="num">{_e(_size(m["size"]))}</td>'
        f"<td>{_e(m['processor'])}</td>"
        f"<td>{_e(_until(m['expires_at'], now))}</td>"
        "</tr>"
        for m in runner["models"]
    )
    table = (f"<table><thead><tr><th>Model</th><th class=num>Size</th><th>Processor</th><th>Until</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>" if rows else '<p class="none">No model loaded.</p>')
    return f"""<section id="runner"><h2>Runner</h2>
{table}
{_facts([("Loaded models", str(len(runner["models"]))), ("Queue depth", str(runner["queue_depth"]))])}
</section>"""


def _charts(history: dict[str, Any], now: float) -> str:
    span = history["span"]
    bins = _bins(history["points"], now, span)

    def rate(key: str) -> list[tuple[float, float | None]]:
        return [(at, b[key] / b["seconds"] if b else None) for at, b in bins]

    ratio = [(at, b["hit_bytes"] / served if b and (served := b["hit_bytes"] + b["miss_bytes"]) else None)
             for at, b in bins]
    charts = [
        ("Served from cache", line_chart("Bytes served from cache per second", rate("hit_bytes"), now=now,
                                         span=span, label=_rate)),
        ("Fetched upstream", line_chart("Bytes fetched upstream per second", rate("upstream_bytes"), now=now,
                                        span=span, label=_rate)),
        ("Hit ratio by bytes", line_chart("Share of the bytes served that came from the cache", ratio, now=now,
                                          span=span, label=lambda v: f"{100 * v:.0f}%", ceiling=1.0)),
    ]
    return f"""<section id="charts" class="wide"><h2>Last {span / 3600:g} hours</h2>
<div class="charts">{"".join(f"<figure><figcaption>{_e(c)}</figcaption>{svg}</figure>" for c, svg in charts)}</div>
</section>"""


def _bins(points: list[dict[str, Any]], now: float, span: float) -> list[tuple[float, dict[str, float] | None]]:
    """The history summed into CHART_BINS equal stretches of the span (a chart a few hundred pixels wide
    cannot show 1,440 minutes), each stamped with its end; None where no sample fell (before the start)."""
    width = span / CHART_BINS
    sums: list[dict[str, float] | None] = [None] * CHART_BINS
    for p in points:
        index = min(int((p["at"] - (now - span)) / width), CHART_BINS - 1)
        if index < 0:
            continue
        total = sums[index] = sums[index] or dict.fromkeys(_SUMMED, 0.0)
        for key in total:
            total[key] += p[key]
    return [(min(now - span + (i + 1) * width, now), b) for i, b in enumerate(sums)]


def _fills(fills: list[dict[str, Any]]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{_e(f['model'])}{_fetched_by(f.get('fetched_by'))}</td>"
        f"<td><code>{_e(f['digest'][7:19])}</code></td>"
        f"<td>{_meter('', 'fill progress', f['completed'], f['size'], [('c-cache', f['completed'])], small=True)}</td>"
        f'<td class="num">{_e(_size(f["completed"]))} of {_e(_size(f["size"]))}</td>'
        f'<td class="num">{_e(_rate(f["speed"])) if f["speed"] is not None else "–"}</td>'
        f'<td class="num">{_e(_duration(f["eta"])) if f["eta"] is not None else "–"}</td>'
        f'<td class="num">{f["readers"]}</td>'
        "</tr>"
        for f in fills
    )
    table = ("<table><thead><tr><th>Model</th><th>Blob</th><th>Progress</th><th class=num>Done</th>"
             "<th class=num>Speed</th><th class=num>Time left</th><th class=num>Readers</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>" if rows else '<p class="none">None.</p>')
    return f"""<section id="fills" class="wide"><h2>Fills in progress ({len(fills)})</h2>
{table}
</section>"""


def _fetched_by(node: str | None) -> str:
    """In a cluster, a fill another node fetches while this one serves its progress."""
    return f' <span class="legend">(fetched by node {_e(node)})</span>' if node else ""


def _nodes(cluster: dict[str, Any] | None, now: float) -> str:
    """Cluster mode only: every node on the catalogue, which one this is and whether it does the
    background work."""
    if cluster is None:
        return ""
    this = " (this node, on background duty)" if cluster["on_duty"] else " (this node)"
    rows = "".join(
        "<tr>"
        f"<td>{_e(n['name'] + (this if n['this'] else ''))}</td>"
        f"<td>{_e(n['url'])}</td><td>{_e(n['host'])}</td><td>{_e(n['state'])}</td>"
        f"<td>{_e(_ago(n['heartbeat_at'], now))}</td>"
        "</tr>"
        for n in cluster["nodes"]
    )
    return f"""<section id="nodes" class="wide"><h2>Nodes ({len(cluster["nodes"])})</h2>
<table><thead><tr><th>Node</th><th>URL</th><th>Host</th><th>State</th><th>Last heartbeat</th></tr></thead>
<tbody>{rows}</tbody></table>
</section>"""


def _models(models: list[dict[str, Any]]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{_e(m['name'])}</td>"
        f'<td class="num">{_e(_size(m["size"]))}</td>'
        f"<td>{'pinned' if m['pinned'] else ''}</td>"
        f"<td>{_e(_ago(m['last_used']) if m['last_used'] else 'never (added ' + _ago(m['modified_at']) + ')')}</td>"
        f"<td>{_e(m['protected'] or '')}</td>"
        "</tr>"
        for m in models
    )
    table = ("<table><thead><tr><th>Name</th><th class=num>Size</th><th>Pin</th><th>Last used</th>"
             f"<th>Never evicted because</th></tr></thead><tbody>{rows}</tbody></table>"
             if rows else '<p class="none">No models yet.</p>')
    return f"""<section id="models" class="wide"><h2>Models ({len(models)})</h2>
{table}
</section>"""


def _meter(ident: str, name: str, value: int, maximum: int, parts: list[tuple[str, int]], extra: str = "",
           *, small: bool = False) -> str:
    """A bar of stacked parts (css class, bytes) against `maximum`, with the ARIA of a meter."""
    spans = "".join(f'<span class="{cls}" style="width:{_pct(n / maximum if maximum else 0)}"></span>'
                    for cls, n in parts)
    ident_attr = f' id="{ident}"' if ident else ""
    return (f'<div{ident_attr} class="meter{" small" if small else ""}" role="meter" aria-label="{_e(name)}" '
            f'aria-valuemin="0" aria-valuemax="{maximum}" aria-valuenow="{value}">{spans}{extra}</div>')


def _facts(facts: list[tuple[str, str]]) -> str:
    return f"<dl>{''.join(f'<dt>{_e(k)}</dt><dd>{_e(v)}</dd>' for k, v in facts)}</dl>"


def _pct(fraction: float) -> str:
    return f"{100 * min(max(fraction, 0.0), 1.0):.1f}%"


def _size(n: int) -> str:
    return format_byte_size(n)


def _rate(bytes_per_second: float) -> str:
    return f"{format_byte_size(int(bytes_per_second))}/s"


def _duration(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} s"


def _ago(ts: float, now: float | None = None) -> str:
    delta = max(0.0, (now or time.time()) - ts)
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= seconds:
            n = int(delta // seconds)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def _until(ts: float, now: float) -> str:
    left = ts - now
    if left > _FOREVER:
        return "forever"
    if left <= 0:
        return "stopping"
    return "in " + _duration(left)


def _e(value: object) -> str:
    return html.escape(str(value))
