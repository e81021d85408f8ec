"""A lint for sources of nondeterminism in member code (actors/, storage/, net/).

The simulator runs member code and promises that a seed replays bit for bit (DESIGN.md on
determinism), so member code takes time from its injected clock, randomness from its injected
``random.Random`` and runs on Trio tasks only. Anything else slips past the simulator's
seed: the wall clock (``time.time``, ``time.monotonic``, ``datetime.now``), the OS's entropy
(``os.urandom``, ``uuid.uuid4``, ``secrets``, ``SystemRandom``, an unseeded ``Random()``),
the global generator (``random.random()``), threads (``threading``, ``trio.to_thread``,
``concurrent``, ``multiprocessing``, ``asyncio``). The sweep's determinism self-check finds
such a source only when a rerun happens to differ; this finds it when it is written.

A deliberate exception (production-only code that the simulator never reaches, or a wall
clock used only to report) carries ``# nondeterminism-ok: <why>`` on its line or the line
above. The composition root (``troika/``) and the simulator's harness (``sim/``) are not
member code and are not checked. Iterating unsorted sets of strings is the one source this
cannot see; ``tests/sim/test_runner.py`` runs a seed under two hash seeds for that.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMBER_PACKAGES = ("actors", "storage", "net")
MARKER = "nondeterminism-ok"

FORBIDDEN_MODULES = frozenset(
    {"threading", "secrets", "uuid", "multiprocessing", "concurrent", "asyncio", "_thread"}
)
FORBIDDEN_ATTRIBUTES = {
    "time": frozenset(
        {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
         "process_time", "process_time_ns", "sleep", "clock_gettime", "clock_gettime_ns"}
    ),
    "datetime": frozenset({"now", "utcnow", "today"}),
    "date": frozenset({"today"}),
    "os": frozenset({"urandom", "getrandom", "getpid", "times"}),
    "uuid": frozenset({"uuid1", "uuid4"}),
    "to_thread": frozenset({"run_sync"}),
}  # fmt: skip
RANDOM_ALLOWED = frozenset({"Random"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One source of nondeterminism."""

    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _dotted(node: ast.expr) -> list[str]:
    """``a.b.c`` as ["a", "b", "c"] (only names and attributes; [] otherwise)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return []


def _node_findings(node: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                found.append((node.lineno, f"imports {alias.name}"))
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        top = node.module.split(".")[0]
        for alias in node.names:
            if top in FORBIDDEN_MODULES:
                found.append((node.lineno, f"imports {node.module}.{alias.name}"))
            elif top == "random" and alias.name not in RANDOM_ALLOWED:
                found.append((node.lineno, f"imports random.{alias.name} (the global generator)"))
            elif alias.name in FORBIDDEN_ATTRIBUTES.get(top, ()):
                found.append((node.lineno, f"imports {top}.{alias.name}"))
    elif isinstance(node, ast.Attribute):
        parts = _dotted(node)
        if len(parts) >= 2:
            owner, name = parts[-2], parts[-1]
            if name in FORBIDDEN_ATTRIBUTES.get(owner, ()):
                found.append((node.lineno, f"uses {owner}.{name}"))
            elif owner == "random" and len(parts) == 2 and name not in RANDOM_ALLOWED:
                found.append((node.lineno, f"uses random.{name} (the global generator)"))
    elif isinstance(node, ast.Call):
        parts = _dotted(node.func)
        if parts and parts[-1] == "SystemRandom":
            found.append((node.lineno, "uses SystemRandom (the OS's entropy)"))
        elif parts and parts[-1] == "Random" and not node.args and not node.keywords:
            found.append((node.lineno, "makes an unseeded Random() (seeded from the OS)"))
    return found


def findings_in(source: str, path: str) -> list[Finding]:
    """Every source of nondeterminism in ``source`` not marked ``# nondeterminism-ok``."""
    lines = source.splitlines()

    def marked(line: int) -> bool:
        """The marker on the line, or in the block of comment lines right above it."""
        if MARKER in lines[line - 1]:
            return True
        above = line - 2
        while above >= 0 and lines[above].strip().startswith("#"):
            if MARKER in lines[above]:
                return True
            above -= 1
        return False

    found = {
        (line, what)
        for node in ast.walk(ast.parse(source, path))
        for line, what in _node_findings(node)
        if not marked(line)
    }
    return [Finding(path, line, what) for line, what in sorted(found)]


def test_member_code_has_no_unmarked_source_of_nondeterminism() -> None:
    findings: list[Finding] = []
    for package in MEMBER_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            findings.extend(findings_in(path.read_text(), relative))
    assert not findings, "\n".join(map(str, findings))


PLANTED = """
import threading
import time
import uuid
import random
from random import choice
from os import urandom
import datetime
import trio
from random import Random

def member_code(rng: Random) -> None:
    started = time.monotonic()
    stamp = datetime.datetime.now()
    key = uuid.uuid4()
    salt = urandom(16)
    pick = random.random()
    unseeded = Random()
    worker = trio.to_thread.run_sync(print)
    fine = rng.random() + Random(7).random() + time.__name__.count("x")
    allowed = time.time()  # nondeterminism-ok: reporting only
"""


def test_the_lint_catches_each_planted_source() -> None:
    found = {finding.what for finding in findings_in(PLANTED, "planted.py")}
    assert found == {
        "imports threading",
        "imports uuid",
        "imports random.choice (the global generator)",
        "imports os.urandom",
        "uses time.monotonic",
        "uses datetime.now",
        "uses uuid.uuid4",
        "uses random.random (the global generator)",
        "makes an unseeded Random() (seeded from the OS)",
        "uses to_thread.run_sync",
    }
