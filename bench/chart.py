"""The benchmark's picture: throughput and p99 latency against connections, troika beside etcd.

One row per workload, two panels per row (ops/s, p99 ms), one line per system; both axes of
connections are logarithmic, as the counts usually are (1, 16, 64); a watch fan-out's events
per second too (1 to 1,000 watchers span orders of magnitude). With memory samples, a last row
of bars: the leader's resident MiB holding the items, and KiB per item. Drawn with matplotlib's
Agg backend, so no display is needed. ``python -m bench.chart bench.json bench.png`` redraws
a chart from a results file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.suite import FAN_OUT_WORKLOADS, BenchReport, memory_cells, report_from_json

COLOURS = {"troika": "#c0392b", "etcd": "#2471a3"}
PANEL_WIDTH_IN = 5.0
PANEL_HEIGHT_IN = 3.2
TITLE_TOP = 0.97
"""The panels end here (a fraction of the figure's height), leaving room for the title."""


def draw(report: BenchReport, path: Path) -> None:
    """Write the chart of ``report`` to ``path`` (PNG)."""
    workloads = list(report.plan.rate_workloads)
    cells = report.cells()
    rows = len(workloads) + int(bool(report.memory))
    figure, axes = plt.subplots(
        rows,
        2,
        figsize=(2 * PANEL_WIDTH_IN, PANEL_HEIGHT_IN * rows),
        squeeze=False,
    )
    if report.memory:
        _draw_memory(report, axes[-1])
    for row, workload in enumerate(workloads):
        throughput, latency = axes[row]
        for system, colour in COLOURS.items():
            mine = sorted(
                (c for c in cells if c.system == system and c.workload == workload),
                key=lambda c: c.connections,
            )
            if not mine:
                continue
            counts = [c.connections for c in mine]
            throughput.plot(counts, [c.ops_per_s for c in mine], "o-", color=colour, label=system)
            latency.plot(counts, [c.p99_ms for c in mine], "o-", color=colour, label=system)
        fan_out = workload in FAN_OUT_WORKLOADS
        unit = "watchers" if fan_out else "connections"
        throughput.set_title(f"{workload}: {'events delivered' if fan_out else 'ops'}/s")
        latency.set_title(f"{workload}: p99 latency (ms)")
        for axis in (throughput, latency):
            axis.set_xscale("log", base=2)
            axis.set_xticks(list(report.plan.connections))
            axis.set_xticklabels([str(count) for count in report.plan.connections])
            axis.set_xlabel(unit)
            if fan_out and axis is throughput:
                axis.set_yscale("log")  # 1 to 1,000 watchers span orders of magnitude
            else:
                axis.set_ylim(bottom=0)
            axis.grid(True, alpha=0.3)
            axis.legend()
    machine = report.machine
    figure.suptitle(
        f"troika vs etcd, {report.plan.cluster_size} members on loopback, "
        f"{machine.get('cpus')} CPUs, median of {report.plan.runs} runs"
    )
    figure.tight_layout(rect=(0.0, 0.0, 1.0, TITLE_TOP))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _draw_memory(report: BenchReport, panels: Sequence[Axes]) -> None:
    """Bars: resident MiB while holding the items, and KiB per item, by workload and system."""
    held, per_item = panels
    chosen = memory_cells(report)
    workloads = sorted({sample.workload for sample in chosen})
    width = 0.8 / len(COLOURS)
    for offset, (system, colour) in enumerate(COLOURS.items()):
        mine = {s.workload: s for s in chosen if s.system == system}
        if not mine:
            continue
        places = [i + offset * width for i in range(len(workloads))]
        for axis, value in ((held, "rss_holding_mib"), (per_item, "kib_per_item")):
            heights = [getattr(mine[w], value) if w in mine else 0.0 for w in workloads]
            axis.bar(places, heights, width, color=colour, label=system)
    items = chosen[0].items if chosen else 0
    held.set_title(f"resident MiB of the leader holding {items} (before: see JSON)")
    per_item.set_title("KiB per lease / watcher")
    for axis in panels:
        axis.set_xticks([i + width / 2 for i in range(len(workloads))])
        axis.set_xticklabels(workloads)
        axis.grid(True, axis="y", alpha=0.3)
        axis.legend()


def main(argv: list[str]) -> int:
    """``python -m bench.chart RESULTS.json CHART.png``."""
    if len(argv) != 2:
        print("usage: python -m bench.chart RESULTS.json CHART.png", file=sys.stderr)
        return 2
    draw(report_from_json(json.loads(Path(argv[0]).read_text())), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
