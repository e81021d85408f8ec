"""A history drawn as one self-contained HTML page: a timeline per client, in inline SVG.

One row per client; each operation is a bar from its invoke to its completion, colored by
outcome (ok green, failed amber, indeterminate grey) and labelled with its kind, key and values
clipped to the bar (every bar also has a tooltip with the full record). An indeterminate
operation is drawn open-ended: a bar up to when its client gave up, then a dashed line to the
right edge, since it may take effect at any later time. Fault events are vertical lines (or
bands, when they have an end). The operations of a violation's witness are outlined in red and
listed under the drawing.

No scripts, fonts or other assets: the page opens from a CI artifact as it is. The output is a
pure function of the input (numbers are printed with fixed precision), so two renderings of the
same history are byte-identical.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sim.history import History, Operation, Outcome
from sim.linearizability import CheckResult

LABEL_WIDTH_PX: Final = 90
ROW_HEIGHT_PX: Final = 26
BAR_HEIGHT_PX: Final = 18
AXIS_HEIGHT_PX: Final = 24
FAULT_LABEL_LEVELS: Final = 3
FAULT_LABEL_HEIGHT_PX: Final = 14
PLOT_WIDTH_PX_MIN: Final = 1200
PLOT_WIDTH_PX_MAX: Final = 40_000
PLOT_WIDTH_PX_PER_OPERATION: Final = 110
"""Per operation of the busiest client, so that labels get room on long histories."""
LABEL_WIDTH_MIN_PX: Final = 14
"""Bars narrower than this get no label (the tooltip still has it); wider ones a clipped one."""
TICKS_WANTED: Final = 12

OUTCOME_COLORS: Final = {
    Outcome.OK: "#66bb6a",
    Outcome.FAILED: "#ffa726",
    Outcome.INDETERMINATE: "#bdbdbd",
}
HIGHLIGHT_COLOR: Final = "#d50000"
FAULT_COLOR: Final = "#7b1fa2"


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """Something the simulator did to the cluster: a line at ``time_s``, or a band up to
    ``end_s``."""

    time_s: float
    text: str
    end_s: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.time_s):
            raise ValueError("a fault event needs a finite time")
        if self.end_s is not None and not (math.isfinite(self.end_s) and self.end_s >= self.time_s):
            raise ValueError("a fault band ends at a finite time not before its start")


@dataclass(frozen=True, slots=True)
class _Frame:
    start_s: float
    end_s: float
    plot_width_px: float
    top_px: float

    def x(self, time_s: float) -> float:
        return LABEL_WIDTH_PX + (time_s - self.start_s) / (self.end_s - self.start_s) * (
            self.plot_width_px
        )

    @property
    def right_px(self) -> float:
        return LABEL_WIDTH_PX + self.plot_width_px


def _number(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _frame(
    operations: Sequence[Operation], faults: Sequence[FaultEvent], clients: Sequence[int]
) -> _Frame:
    times = [op.invoke_s for op in operations]
    times += [op.complete_s for op in operations if op.complete_s is not None]
    times += [fault.time_s for fault in faults]
    times += [fault.end_s for fault in faults if fault.end_s is not None]
    start_s = min(times, default=0.0)
    end_s = max(times, default=1.0)
    if end_s <= start_s:
        end_s = start_s + 1.0
    busiest = max(
        (sum(1 for op in operations if op.client_id == client) for client in clients), default=0
    )
    width_px = min(PLOT_WIDTH_PX_MAX, max(PLOT_WIDTH_PX_MIN, busiest * PLOT_WIDTH_PX_PER_OPERATION))
    top_px = AXIS_HEIGHT_PX + (FAULT_LABEL_LEVELS * FAULT_LABEL_HEIGHT_PX if faults else 0)
    return _Frame(start_s, end_s, float(width_px), float(top_px))


def _tick_step(span_s: float) -> float:
    raw = span_s / TICKS_WANTED
    magnitude: float = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        if multiple * magnitude >= raw:
            return multiple * magnitude
    return 10 * magnitude


def _axis(frame: _Frame, height_px: float) -> list[str]:
    step_s = _tick_step(frame.end_s - frame.start_s)
    first = math.ceil(frame.start_s / step_s)
    last = math.floor(frame.end_s / step_s)
    parts = ['<g class="axis">']
    for tick in range(first, last + 1):
        time_s = tick * step_s
        x = _number(frame.x(time_s))
        parts.append(
            f'<line x1="{x}" y1="{_number(frame.top_px - 4)}" x2="{x}" y2="{_number(height_px)}" '
            'stroke="#eeeeee"/>'
        )
        parts.append(
            f'<text x="{x}" y="{_number(frame.top_px - 8)}" text-anchor="middle">'
            f"{_escape(f'{time_s:.6g}')}s</text>"
        )
    parts.append("</g>")
    return parts


def _faults(faults: Sequence[FaultEvent], frame: _Frame, height_px: float) -> list[str]:
    parts = ['<g class="faults">']
    ordered = sorted(faults, key=lambda fault: (fault.time_s, fault.end_s or 0.0, fault.text))
    for number, fault in enumerate(ordered):
        x = frame.x(fault.time_s)
        label_y = AXIS_HEIGHT_PX + (number % FAULT_LABEL_LEVELS + 1) * FAULT_LABEL_HEIGHT_PX - 3
        title = f"<title>{_escape(f'{fault.time_s:.4f}s: {fault.text}')}</title>"
        if fault.end_s is not None and fault.end_s > fault.time_s:
            width = frame.x(fault.end_s) - x
            parts.append(
                f'<rect class="fault-band" x="{_number(x)}" y="{_number(frame.top_px)}" '
                f'width="{_number(width)}" height="{_number(height_px - frame.top_px)}" '
                f'fill="{FAULT_COLOR}" fill-opacity="0.08">{title}</rect>'
            )
        parts.append(
            f'<line class="fault" x1="{_number(x)}" y1="{_number(label_y - 10)}" '
            f'x2="{_number(x)}" y2="{_number(height_px)}" stroke="{FAULT_COLOR}" '
            f'stroke-dasharray="4 3">{title}</line>'
        )
        parts.append(
            f'<text class="fault-label" x="{_number(x + 3)}" y="{_number(label_y)}" '
            f'fill="{FAULT_COLOR}">{_escape(fault.text)}</text>'
        )
    parts.append("</g>")
    return parts


def _operation(op: Operation, frame: _Frame, row_top_px: float, failing: bool) -> list[str]:
    x = frame.x(op.invoke_s)
    y = row_top_px + (ROW_HEIGHT_PX - BAR_HEIGHT_PX) / 2
    open_ended = op.outcome is Outcome.INDETERMINATE
    end_px = frame.right_px if op.complete_s is None else frame.x(op.complete_s)
    width = max(end_px - x, 1.0)
    classes = f"op {op.outcome.value}" + (" failing" if failing else "")
    stroke = (f'stroke="{HIGHLIGHT_COLOR}" stroke-width="3"' if failing else 'stroke="#616161"') + (
        ' stroke-dasharray="3 2"' if open_ended and op.complete_s is None else ""
    )
    tooltip = op.describe() + (f" ({op.note})" if op.note else "")
    parts = [
        f'<g class="{classes}" data-op="{op.op_id}"><title>{_escape(tooltip)}</title>',
        f'<rect x="{_number(x)}" y="{_number(y)}" width="{_number(width)}" '
        f'height="{BAR_HEIGHT_PX}" rx="2" fill="{OUTCOME_COLORS[op.outcome]}" {stroke}/>',
    ]
    if open_ended and op.complete_s is not None:
        tail_y = _number(y + BAR_HEIGHT_PX)
        parts.append(
            f'<line x1="{_number(end_px)}" y1="{tail_y}" x2="{_number(frame.right_px)}" '
            f'y2="{tail_y}" stroke="{HIGHLIGHT_COLOR if failing else "#9e9e9e"}" '
            'stroke-dasharray="2 3"/>'
        )
    if width >= LABEL_WIDTH_MIN_PX:
        # A nested viewport clips the label to its bar.
        parts.append(
            f'<svg x="{_number(x)}" y="{_number(y)}" width="{_number(width)}" '
            f'height="{BAR_HEIGHT_PX}"><text x="2" y="{BAR_HEIGHT_PX - 5}">'
            f"{_escape(op.label())}</text></svg>"
        )
    parts.append("</g>")
    return parts


_STYLE: Final = """
body { font-family: sans-serif; margin: 16px; color: #212121; }
.scroll { overflow-x: auto; border: 1px solid #e0e0e0; }
svg text { font-family: monospace; font-size: 11px; }
.legend span { display: inline-block; margin-right: 16px; }
.legend i { display: inline-block; width: 14px; height: 10px; margin-right: 4px;
            border: 1px solid #616161; }
pre { background: #fafafa; border: 1px solid #e0e0e0; padding: 8px; }
"""


def render_timeline(
    history: History | Iterable[Operation],
    *,
    faults: Sequence[FaultEvent] = (),
    highlight: Iterable[int] = (),
    result: CheckResult | None = None,
    title: str = "troika history",
) -> str:
    """The HTML page of a history.

    Args:
        history: the operations to draw.
        faults: fault events to mark.
        highlight: ids of operations to outline (for example a witness).
        result: a checker result; its witnesses are highlighted and its summary is shown.
        title: the page's title.

    Returns:
        The complete HTML document.
    """
    operations = sorted(
        history.operations if isinstance(history, History) else history,
        key=lambda op: (op.client_id, op.invoke_s, op.op_id),
    )
    failing = set(highlight)
    if result is not None:
        failing.update(result.failing_op_ids())
    clients = sorted({op.client_id for op in operations})
    frame = _frame(operations, faults, clients)
    height_px = frame.top_px + len(clients) * ROW_HEIGHT_PX + 4
    width_px = frame.right_px + 16
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_number(width_px)}" '
        f'height="{_number(height_px)}" viewBox="0 0 {_number(width_px)} {_number(height_px)}">',
        *_axis(frame, height_px),
        *_faults(faults, frame, height_px),
    ]
    for row, client in enumerate(clients):
        row_top_px = frame.top_px + row * ROW_HEIGHT_PX
        svg.append(f'<g class="client" data-client="{client}">')
        if row % 2:
            svg.append(
                f'<rect x="0" y="{_number(row_top_px)}" width="{_number(width_px)}" '
                f'height="{ROW_HEIGHT_PX}" fill="#f5f5f5"/>'
            )
        svg.append(
            f'<text x="4" y="{_number(row_top_px + ROW_HEIGHT_PX / 2 + 4)}">client {client}</text>'
        )
        for op in operations:
            if op.client_id == client:
                svg.extend(_operation(op, frame, row_top_px, op.op_id in failing))
        svg.append("</g>")
    svg.append("</svg>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{_escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{_escape(title)}</h1>",
            _legend(len(operations), len(clients), len(faults)),
            '<div class="scroll">',
            *svg,
            "</div>",
            *_details(operations, failing, result),
            "</body>",
            "</html>",
            "",
        ]
    )


def _legend(operations: int, clients: int, faults: int) -> str:
    swatches = "".join(
        f'<span><i style="background:{color}"></i>{outcome.value}</span>'
        for outcome, color in OUTCOME_COLORS.items()
    )
    return (
        f'<p class="legend">{swatches}'
        f'<span><i style="background:#fff;border:2px solid {HIGHLIGHT_COLOR}"></i>failing</span>'
        f'<span><i style="background:{FAULT_COLOR}"></i>fault</span>'
        f"{operations} operations, {clients} clients, {faults} fault events</p>"
    )


def _details(
    operations: Sequence[Operation], failing: set[int], result: CheckResult | None
) -> list[str]:
    parts = []
    if result is not None:
        parts.append(f'<pre class="summary">{_escape(result.summary())}</pre>')
    listed = [op for op in sorted(operations, key=lambda op: op.op_id) if op.op_id in failing]
    if listed:
        parts.append("<h2>Failing operations</h2>")
        parts.append('<pre class="failing">')
        parts.extend(_escape(op.describe()) for op in listed)
        parts.append("</pre>")
    return parts
