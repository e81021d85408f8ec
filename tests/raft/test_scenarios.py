"""Replay every scenario script in testdata/ against the Raft core."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.raft.harness import run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_scenario(path: Path, request: pytest.FixtureRequest) -> None:
    rewrite = bool(request.config.getoption("--rewrite")) or os.environ.get("TROIKA_REWRITE") == "1"
    mismatches, actual = run_script(path, rewrite)
    if rewrite:
        path.write_text(actual)
        return
    assert not mismatches, "\n\n".join(mismatches) + "\n\n(rerun with --rewrite to accept)"


def test_scripts_exist() -> None:
    assert len(SCRIPTS) >= 8, SCRIPTS
