"""The import rules of DESIGN.md, checked on every .py file of the repository (parsed with ast).

Rules (the package of a file is the first part of its path):

- (a) ``actors/raft/`` is the pure Raft core: it imports only ``actors.raft`` itself and the
  standard library, minus modules that reach the outside world (clock, sockets, threads, the
  file system, process state, entropy). ``random`` is allowed only as ``from random import
  Random``, the type of the injected generator.
- (b) ``storage/`` and ``net/`` import nothing of ours above them: no actors, sim, bench, troika.
- (c) only ``sim/``, ``bench/``, ``troika/`` (the CLI) and ``tests/`` import ``sim``.
- (d) ``actors/``, ``storage/`` and ``net/`` never import ``bench`` or ``troika``.
- (e) only ``tests/`` imports ``tests``.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent

RAFT = "actors.raft"
OUR_PACKAGES = frozenset({"actors", "storage", "net", "sim", "bench", "troika", "tests"})
SIM_IMPORTERS = frozenset({"sim", "bench", "troika", "tests"})
LOWER_PACKAGES = frozenset({"actors", "storage", "net"})

RAFT_FORBIDDEN = frozenset(
    {
        # named by the design: I/O, clocks, threads, entropy, and our dependencies with I/O
        "trio",
        "rocksdict",
        "cbor2",
        "socket",
        "time",
        "datetime",
        "threading",
        "asyncio",
        "os",
        "uuid",
        "secrets",
        # more of the same kind, from the standard library
        "concurrent",
        "http",
        "importlib",
        "multiprocessing",
        "pathlib",
        "select",
        "selectors",
        "shutil",
        "signal",
        "sqlite3",
        "ssl",
        "subprocess",
        "tempfile",
        "urllib",
    }
)
RANDOM_ALLOWED = "random.Random"

SKIPPED_DIRECTORIES = frozenset({"venv", "build", "dist", "__pycache__", "node_modules"})


@dataclass(frozen=True, slots=True)
class Violation:
    """One import that breaks a rule."""

    path: str
    line: int
    module: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}: {self.rule}"


def module_name(path: str) -> tuple[str, bool]:
    """The dotted module name of a repository-relative path, and whether it is a package."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module that `from ... import` reads from."""
    if node.level == 0:
        assert node.module is not None
        return node.module
    parts = module.split(".") if is_package else module.split(".")[:-1]
    keep = len(parts) - (node.level - 1)
    assert keep > 0, f"relative import above the top level in {module}"
    base = parts[:keep]
    if node.module:
        base.append(node.module)
    return ".".join(base)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything imported anywhere in the tree.

    ``import a.b`` yields ``a.b``; ``from a import b, c`` yields ``a.b`` and ``a.c`` (b may be a
    module or a name in a; the rules only look at prefixes, so either reading works). A call of
    ``__import__`` yields ``__import__``, so that a dynamic import cannot slip past.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, is_package)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            yield node.lineno, "__import__"


def _raft_rule(imported: str) -> str | None:
    if _within(imported, RAFT):
        return None
    top = imported.split(".", maxsplit=1)[0]
    if top == "random":
        if imported == RANDOM_ALLOWED:
            return None
        return "the Raft core may only use `from random import Random` (an injected generator)"
    if top in OUR_PACKAGES:
        return "the Raft core imports nothing of ours outside actors.raft"
    if top in RAFT_FORBIDDEN or imported == "__import__":
        return "the Raft core does no I/O: no clock, sockets, threads, files or entropy"
    if top not in sys.stdlib_module_names:
        return "the Raft core imports only the standard library"
    return None


def _package_rules(package: str, imported: str) -> Iterator[str]:
    if package in {"storage", "net"}:
        for upper in ("actors", "sim", "bench", "troika"):
            if _within(imported, upper):
                yield f"{package}/ imports nothing of ours above it ({upper})"
    if package not in SIM_IMPORTERS and _within(imported, "sim"):
        yield "only sim/, bench/, troika/ and tests/ import sim"
    if package in LOWER_PACKAGES:
        for upper in ("bench", "troika"):
            if _within(imported, upper):
                yield f"{package}/ never imports {upper}"
    if package != "tests" and _within(imported, "tests"):
        yield "only tests/ imports tests"


def violations_in(source: str, path: str) -> list[Violation]:
    """Every layering violation in one file's source; path is relative to the repository."""
    module, is_package = module_name(path)
    package = module.split(".")[0]
    in_raft = _within(module, RAFT)
    tree = ast.parse(source, filename=path)
    found: list[Violation] = []
    for line, imported in imported_modules(tree, module, is_package):
        rules = list(_package_rules(package, imported))
        if in_raft:
            raft_rule = _raft_rule(imported)
            if raft_rule is not None:
                rules.append(raft_rule)
        found.extend(Violation(path, line, imported, rule) for rule in rules)
    return found


def python_files(root: Path) -> Iterator[Path]:
    """Every .py file under root, skipping hidden directories, virtualenvs and build output."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if not name.startswith(".")
            and name not in SKIPPED_DIRECTORIES
            and not name.endswith(".egg-info")
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(directory, name)


def test_every_python_file_keeps_the_layering() -> None:
    checked: list[str] = []
    violations: list[Violation] = []
    for file in python_files(ROOT):
        path = file.relative_to(ROOT).as_posix()
        checked.append(path)
        violations.extend(violations_in(file.read_text(encoding="utf-8"), path))
    assert "tests/test_layering.py" in checked
    assert "troika/cli.py" in checked
    assert not violations, "layering broken:\n" + "\n".join(map(str, violations))


@pytest.mark.parametrize(
    ("path", "source", "module"),
    [
        # (a) the Raft core
        ("actors/raft/core.py", "import trio\n", "trio"),
        ("actors/raft/core.py", "from time import monotonic\n", "time.monotonic"),
        ("actors/raft/core.py", "import os.path\n", "os.path"),
        ("actors/raft/core.py", "import random\n", "random"),
        ("actors/raft/core.py", "from random import randint\n", "random.randint"),
        ("actors/raft/core.py", "import cbor2\n", "cbor2"),
        ("actors/raft/core.py", "import attrs\n", "attrs"),
        ("actors/raft/core.py", "from storage import disk\n", "storage.disk"),
        ("actors/raft/core.py", "from .. import transport\n", "actors.transport"),
        ("actors/raft/core.py", "def f():\n    import socket\n", "socket"),
        ("actors/raft/core.py", "m = __import__('trio')\n", "__import__"),
        ("actors/raft/__init__.py", "from ..apply import x\n", "actors.apply.x"),
        # (b) storage and net
        ("storage/disk.py", "from actors.raft import Entry\n", "actors.raft.Entry"),
        ("net/tcp.py", "import troika.cli\n", "troika.cli"),
        # (c) sim is imported only from above
        ("actors/node.py", "from sim.network import SimNetwork\n", "sim.network.SimNetwork"),
        # (d) nothing low imports bench or troika
        ("actors/node.py", "import bench.raft_core\n", "bench.raft_core"),
        # (e) production code never imports tests
        ("sim/run.py", "from tests.raft import harness\n", "tests.raft.harness"),
    ],
)
def test_the_checker_reports_a_forbidden_import(path: str, source: str, module: str) -> None:
    violations = violations_in(source, path)
    assert violations, f"no violation reported for {source!r} in {path}"
    assert {violation.module for violation in violations} == {module}
    assert all(violation.path == path for violation in violations)


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("actors/raft/core.py", "from random import Random\n"),
        ("actors/raft/core.py", "from __future__ import annotations\nimport enum\n"),
        ("actors/raft/core.py", "from . import quorum\nfrom .log import RaftLog\n"),
        ("actors/raft/__init__.py", "from .core import Raft\n"),
        ("actors/raft/core.py", "from actors.raft.messages import Entry\n"),
        ("actors/node.py", "import trio\nfrom storage import disk\nfrom net import tcp\n"),
        ("storage/disk.py", "import rocksdict\nimport os\n"),
        ("sim/network.py", "from net import Network\nfrom actors import node\n"),
        ("bench/raft_core.py", "from sim import cluster\nfrom actors.raft import RawNode\n"),
        ("troika/cli.py", "from sim import run\nfrom bench import raft_core\n"),
        ("tests/test_x.py", "from sim import run\nfrom tests.raft import harness\n"),
    ],
)
def test_the_checker_accepts_allowed_imports(path: str, source: str) -> None:
    assert violations_in(source, path) == []
