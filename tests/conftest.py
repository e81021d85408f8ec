"""Shared pytest options, and the root logger's level kept from one test to the next."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="write actual output back into scenario scripts (tests/raft/testdata)",
    )


@pytest.fixture(autouse=True)
def _root_log_level_kept() -> Iterator[None]:
    """A sweep quiets the root logger for its whole process (members log every lost
    connection); a test that runs one in-process must not leave the next test on the same
    worker deaf to the records it looks for."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)
