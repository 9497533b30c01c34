"""Small line charts drawn on the server as inline SVG, for a status page that runs no JavaScript.

One chart is a time series over a fixed window ending now: a line (broken where there is no
value), the area under it, the peak written in the corner and the window's start, middle and end
under it. The markup is well-formed XML (every text escaped, every element closed), so it can be
inlined into HTML or served alone.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

WIDTH, HEIGHT = 360, 120
_LEFT, _RIGHT, _TOP, _BOTTOM = 4, 356, 18, 98  # the plot area inside the view box

Series = Sequence[tuple[float, float | None]]  # (unix time, value or None for "no value")


def line_chart(title: str, series: Series, *, now: float, span: float, label: Callable[[float], str],
               ceiling: float | None = None) -> str:
    """An SVG of `series` over the `span` seconds before `now`; `label` writes a value for the peak.

    The y axis runs from 0 to `ceiling` (e.g. 1 for a ratio) or to the largest value.
    """
    values = [v for _, v in series if v is not None]
    top = ceiling if ceiling is not None else max(values, default=0.0)
    peak = f"peak {label(max(values))}" if values else "no data yet"

    def x(at: float) -> float:
        return _LEFT + (_RIGHT - _LEFT) * min(max((at - (now - span)) / span, 0.0), 1.0)

    def y(value: float) -> float:
        return _BOTTOM - (_BOTTOM - _TOP) * (value / top if top > 0 else 0.0)

    runs: list[list[tuple[float, float]]] = [[]]
    for at, value in series:
        if value is None:
            runs.append([])
        else:
            runs[-1].append((x(at), y(value)))
    shapes = []
    for run in (r for r in runs if r):
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
        if len(run) == 1:
            shapes.append(f'<circle class="dot" cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="2"/>')
            continue
        area = f"{run[0][0]:.1f},{_BOTTOM} {line} {run[-1][0]:.1f},{_BOTTOM}"
        shapes.append(f'<polygon class="area" points="{area}"/><polyline class="line" points="{line}"/>')
    hours = span / 3600
    ticks = ((_LEFT, "start", f"{hours:g} h ago"), ((_LEFT + _RIGHT) / 2, "middle", f"{hours / 2:g} h ago"),
             (_RIGHT, "end", "now"))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>"
        f'<text class="peak" x="{_RIGHT}" y="11" text-anchor="end">{_e(peak)}</text>'
        f'<line class="grid" x1="{_LEFT}" y1="{_TOP}" x2="{_RIGHT}" y2="{_TOP}"/>'
        f'<line class="axis" x1="{_LEFT}" y1="{_BOTTOM}" x2="{_RIGHT}" y2="{_BOTTOM}"/>'
        + "".join(shapes)
        + "".join(f'<text class="tick" x="{tx:.0f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{_e(text)}</text>'
                  for tx, anchor, text in ticks)
        + "</svg>"
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)
