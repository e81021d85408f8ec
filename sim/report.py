"""What a run reports: a summary a person reads, and files for a failure.

Every report starts with the seed and ends with the trace hash and the
command that replays the run. A failed run also leaves, in its own
directory, the history as JSON (to check again or replay), the smallest
failing history the checker found, and a timeline page (HTML with inline
SVG) of every client's operations with the faults drawn across it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sim.runner import RunResult
from sim.scenarios import Fault
from sim.timeline import FaultEvent, render_timeline


def summary_lines(result: RunResult) -> list[str]:
    """The run in a few lines: seed first, trace hash and replay command last."""
    options = result.options
    lines = [f"SEED={options.seed} scenario={options.scenario}"]
    if options.planted_bug:
        lines[0] += f" planted-bug={options.planted_bug}"
    verdict = "PASSED" if result.passed else f"FAILED ({failure_kind(result)})"
    lines.append(
        f"{verdict}: {result.operations} operations, {result.simulated_s:.1f}s simulated in "
        f"{result.wall_s:.1f}s ({result.simulated_s / max(result.wall_s, 1e-9):.1f}x), "
        f"linearizability {result.linearizability}"
    )
    if result.v3_log is not None:
        lines.append(f"  v3 streams: {result.v3_log.counts()}")
    lines.extend(f"  violation: {text}" for text in result.violations)
    if result.linearizability == "violation":
        lines.extend("  " + line for line in result.linearizability_detail.splitlines())
    if not result.passed:
        lines.append(f"  faults ({len(result.faults)}):")
        lines.extend(f"    {fault.describe()}" for fault in result.faults)
    lines.append(f"trace hash {result.trace_hash}")
    lines.append(f"replay: {options.replay_command()}")
    return lines


FAILURE_KINDS = ("safety", "linearizability", "watchdog", "liveness")
"""What a failed run broke, most serious first: an invariant or checker (safety, including
the watch and lease checkers), linearizability, the watchdog's step budget (a livelock), or
liveness (the healed cluster did not elect, commit and answer every client in time)."""


def failure_kind(result: RunResult) -> str:
    """The most serious kind of failure in a run (``FAILURE_KINDS``, or ``timeout`` for a run
    stopped at the sweep's wall-clock limit, after safety and linearizability); "" if it
    passed."""
    if result.passed:
        return ""
    prefixes = [violation.split(":", 1)[0] for violation in result.violations]
    if any(prefix not in ("liveness", "watchdog", "timeout") for prefix in prefixes):
        return "safety"
    if result.linearizability == "violation":
        return "linearizability"
    if "timeout" in prefixes:
        return "timeout"
    return "watchdog" if "watchdog" in prefixes else "liveness"


def faults_to_json(faults: tuple[Fault, ...]) -> str:
    """A fault schedule as JSON (``--faults-file`` reads it back)."""
    return json.dumps(
        [
            {"at_s": f.at_s, "kind": f.kind, "targets": list(f.targets),
             "duration_s": f.duration_s, "value_s": f.value_s}
            for f in faults
        ],
        indent=1,
    )  # fmt: skip


def faults_from_json(text: str) -> tuple[Fault, ...]:
    """Parse what ``faults_to_json`` wrote.

    Raises:
        ValueError: not a list of faults.
    """
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("a fault schedule is a JSON list")
    return tuple(
        Fault(
            float(item["at_s"]),
            str(item["kind"]),
            tuple(str(target) for target in item.get("targets", [])),
            float(item.get("duration_s", 0.0)),
            float(item.get("value_s", 0.0)),
        )
        for item in items
    )


def failure_files(result: RunResult) -> dict[str, str]:
    """A failed run's report files by name (``write_failure`` writes them; a remote sweep
    worker sends them back so that they land where the sweep was started)."""
    options = result.options
    files = {
        "report.txt": "\n".join(summary_lines(result)) + "\n",
        "faults.json": faults_to_json(result.faults) + "\n",
    }
    if result.history is not None:
        files["history.json"] = result.history.to_json()
        events = [FaultEvent(time_s, text) for time_s, text in result.events]
        highlight = result.check.failing_op_ids() if result.check is not None else frozenset()
        files["timeline.html"] = render_timeline(
            result.history,
            faults=events,
            highlight=highlight,
            result=result.check,
            title=f"troika sim: seed {options.seed}, {options.scenario}",
        )
    return files


def run_directory(directory: Path, seed: int, scenario: str) -> Path:
    """Where a failed seed's files go under a report directory."""
    return directory / f"seed-{seed}-{scenario}"


def write_files(run_dir: Path, files: dict[str, str]) -> Path:
    """Write report files (``failure_files``) into ``run_dir``; returns it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        (run_dir / name).write_text(text)
    return run_dir


def write_failure(result: RunResult, directory: Path) -> Path:
    """Write a failed run's files; returns the run's own directory."""
    options = result.options
    return write_files(
        run_directory(directory, options.seed, options.scenario), failure_files(result)
    )
