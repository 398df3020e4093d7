"""A stacked bar chart as SVG text, drawn on the server: no JavaScript, no inline styles.

Pure: figures in, markup out. The chart is an image to assistive technology (``role="img"``
with a ``<title>`` and ``<desc>``); the page shows the same figures as a table, which is the
accessible alternative and what the tests compare the bars with. Colours are presentation
attributes (the Content-Security-Policy allows no inline ``style``), taken from the GOV.UK
palette and told apart by the legend's order as well as by colour.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

#: GOV.UK colours with enough contrast against white for large graphical objects.
PALETTE = ("#1d70b8", "#d4351c", "#00703c", "#4c2c92", "#f47738", "#28a197", "#912b88", "#505a5f", "#b58840",
           "#003078")

WIDTH = 720
PLOT_TOP = 40
PLOT_HEIGHT = 240
PLOT_LEFT = 48
LEGEND_LINE = 20


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[int, ...]


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above ``value`` (at least 1), for the axis."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for multiple in (1, 2, 5):
            if multiple * step >= value:
                return multiple * step
        step *= 10


def stacked_bars(title: str, description: str, categories: Sequence[str], series: Sequence[Series],
                 *, element_id: str = "chart") -> str:
    """An SVG with one bar per category (month), stacked by series (subgroup), each segment
    carrying its figure in ``data-value`` and in a ``<title>`` tooltip."""
    for item in series:
        if len(item.values) != len(categories):
            raise ValueError(f"series {item.name!r} has {len(item.values)} values for {len(categories)} categories")
        if any(v < 0 for v in item.values):
            raise ValueError("a bar chart of counts has no negative values")
    totals = [sum(item.values[i] for item in series) for i in range(len(categories))]
    top = _nice_ceiling(max(totals, default=0))
    legend_height = LEGEND_LINE * max(len(series), 1)
    height = PLOT_TOP + PLOT_HEIGHT + 50 + legend_height
    slot = (WIDTH - PLOT_LEFT - 10) / max(len(categories), 1)
    bar = max(slot * 0.6, 2)
    title_id, desc_id = f"{element_id}-title", f"{element_id}-desc"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(element_id)}" class="accord-chart" role="img" '
        f'aria-labelledby="{title_id} {desc_id}" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" font-family="sans-serif" font-size="12">',
        f'<title id="{title_id}">{escape(title)}</title>',
        f'<desc id="{desc_id}">{escape(description)}</desc>',
    ]
    for tick in (0, top // 2 if top % 2 == 0 else None, top):
        if tick is None:
            continue
        y = PLOT_TOP + PLOT_HEIGHT - PLOT_HEIGHT * tick / top
        parts.append(f'<line x1="{PLOT_LEFT}" x2="{WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#b1b4b6" '
                     f'stroke-width="1"/>')
        parts.append(f'<text x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#0b0c0c">{tick}</text>')
    for index, category in enumerate(categories):
        x = PLOT_LEFT + slot * index + (slot - bar) / 2
        base = PLOT_TOP + PLOT_HEIGHT
        parts.append(f'<g class="accord-chart__bar" data-category="{escape(category)}" data-total="{totals[index]}">')
        for colour, item in zip(_colours(len(series)), series):
            value = item.values[index]
            if value == 0:
                continue
            h = PLOT_HEIGHT * value / top
            base -= h
            parts.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}" '
                         f'data-series="{escape(item.name)}" data-value="{value}">'
                         f'<title>{escape(item.name)}, {escape(category)}: {value}</title></rect>')
        if totals[index]:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{base - 4:.1f}" text-anchor="middle" '
                         f'fill="#0b0c0c">{totals[index]}</text>')
        middle = x + bar / 2
        lines = "".join(f'<tspan x="{middle:.1f}" dy="{0 if n == 0 else 14}">{escape(word)}</tspan>'
                        for n, word in enumerate(category.split(" ", 1)))  # "Mar 2026": month over year
        parts.append(f'<text x="{middle:.1f}" y="{PLOT_TOP + PLOT_HEIGHT + 16}" text-anchor="middle" '
                     f'fill="#0b0c0c">{lines}</text>')
        parts.append("</g>")
    legend_top = PLOT_TOP + PLOT_HEIGHT + 44
    for row, (colour, item) in enumerate(zip(_colours(len(series)), series)):
        y = legend_top + LEGEND_LINE * row
        parts.append(f'<rect x="{PLOT_LEFT}" y="{y}" width="14" height="14" fill="{colour}"/>')
        parts.append(f'<text x="{PLOT_LEFT + 20}" y="{y + 11}" fill="#0b0c0c">{escape(item.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _colours(count: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(count)]
