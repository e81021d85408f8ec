"""The hot prefixes drawn as one HTML page with an inline SVG chart (no script, no library).

Used by the member (``/troika/v1/hot.html``, its own traffic) and by ``troika inspect hot
--html`` (the members' answers merged). The chart has one line per top prefix: its count in
each of the last minutes (the answer's ``series``), oldest on the left; the table below gives
the window's figures with their space-saving bounds.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Final

WIDTH_PX: Final = 720
HEIGHT_PX: Final = 280
MARGIN_PX: Final = 40
LINES_MAX: Final = 8
COLOURS: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f")  # fmt: skip


def _lines(answer: dict[str, object]) -> tuple[list[str], list[int], list[list[int]]]:
    """(names, ages, counts per name per point) of the answer's series."""
    items = answer.get("items", [])
    series = answer.get("series", [])
    assert isinstance(items, list) and isinstance(series, list)
    names = [str(item["key"]) for item in items[:LINES_MAX]]
    ages = [int(point["age_minutes"]) for point in series]
    counts = [[int(point["counts"][index]) for point in series] for index in range(len(names))]
    return names, ages, counts


def chart_svg(answer: dict[str, object]) -> str:
    """An SVG line chart of the top prefixes' counts per minute."""
    names, ages, counts = _lines(answer)
    oldest = max(ages, default=0)
    top = max((max(line, default=0) for line in counts), default=0) or 1
    inner_w, inner_h = WIDTH_PX - 2 * MARGIN_PX, HEIGHT_PX - 2 * MARGIN_PX

    def x(age: int) -> float:
        return MARGIN_PX + (inner_w if oldest == 0 else inner_w * (oldest - age) / oldest)

    def y(count: int) -> float:
        return MARGIN_PX + inner_h - inner_h * count / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{HEIGHT_PX}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect width="{WIDTH_PX}" height="{HEIGHT_PX}" fill="white"/>',
             f'<line x1="{MARGIN_PX}" y1="{MARGIN_PX + inner_h}" x2="{MARGIN_PX + inner_w}" '
             f'y2="{MARGIN_PX + inner_h}" stroke="black"/>',
             f'<line x1="{MARGIN_PX}" y1="{MARGIN_PX}" x2="{MARGIN_PX}" y2="{MARGIN_PX + inner_h}"'
             ' stroke="black"/>',
             f'<text x="{MARGIN_PX}" y="{MARGIN_PX - 8}">requests per minute (max {top})</text>',
             f'<text x="{MARGIN_PX}" y="{HEIGHT_PX - 10}">{oldest} min ago</text>',
             f'<text x="{MARGIN_PX + inner_w - 20}" y="{HEIGHT_PX - 10}">now</text>']  # fmt: skip
    for index, (name, line) in enumerate(zip(names, counts, strict=True)):
        colour = COLOURS[index % len(COLOURS)]
        pairs = zip(ages, line, strict=True)
        points = " ".join(f"{x(age):.1f},{y(count):.1f}" for age, count in pairs)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{points}"/>')  # fmt: skip
        legend_y = MARGIN_PX + 14 * index
        parts.append(f'<text x="{MARGIN_PX + inner_w - 200}" y="{legend_y}" fill="{colour}">'
                     f"{html.escape(name)}</text>")  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts)


def hot_page(answers: Sequence[dict[str, object]], title: str = "troika: hot prefixes") -> bytes:
    """An HTML page: for each answer, its chart and its table."""
    body = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    for answer in answers:
        body.append(f"<h2>window {html.escape(str(answer.get('window')))}, depth "
                    f"{html.escape(str(answer.get('depth')))}, prefix "
                    f"{html.escape(repr(answer.get('prefix')))}</h2>")  # fmt: skip
        body.append(chart_svg(answer))
        body.append("<table border='1' cellpadding='3'><tr><th>prefix</th><th>requests</th>"
                    "<th>error</th><th>reads</th><th>writes</th><th>watch events</th>"
                    "<th>bytes</th></tr>")  # fmt: skip
        items = answer.get("items", [])
        assert isinstance(items, list)
        for item in items:
            cells = [html.escape(str(item["key"]))] + [
                str(item[name]) for name in ("count", "error", "reads", "writes", "events", "bytes")
            ]
            body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        body.append("</table>")
    body.append("</body></html>")
    return "\n".join(body).encode()
