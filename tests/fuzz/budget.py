"""The fuzzing budget: how many examples each fuzz test runs, chosen by the environment.

Three modes (docs/fuzzing.md):

- fast (the default, the README's test command): each test's ``fast`` examples, derandomized;
  seconds for the whole of ``tests/fuzz/``.
- ci (``TROIKA_FUZZ=ci``, the ``.ci/run`` step "fuzzing (fixed budget)"): each test's ``ci``
  examples, derandomized, so a CI failure replays exactly.
- local (``TROIKA_FUZZ_EXAMPLES=<n>``): ``n`` examples per test, random, no deadline, the
  examples database in ``.hypothesis/`` so a failure found once is tried first next time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

Test = TypeVar("Test", bound=Callable[..., Any])

MODE_VARIABLE = "TROIKA_FUZZ"
EXAMPLES_VARIABLE = "TROIKA_FUZZ_EXAMPLES"
_HEALTH_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def fuzz_mode() -> str:
    """``fast``, ``ci`` or ``local``."""
    if os.environ.get(EXAMPLES_VARIABLE):
        return "local"
    mode = os.environ.get(MODE_VARIABLE, "fast")
    if mode not in ("fast", "ci"):
        raise ValueError(f"{MODE_VARIABLE} must be 'fast' or 'ci', not {mode!r}")
    return mode


def examples(*, fast: int, ci: int) -> int:
    """The examples a test runs in this mode."""
    mode = fuzz_mode()
    if mode == "local":
        return int(os.environ[EXAMPLES_VARIABLE])
    return ci if mode == "ci" else fast


def fuzz_settings(*, fast: int, ci: int) -> Callable[[Test], Test]:
    """Hypothesis settings for one fuzz test: ``fast`` examples in the fast suite, ``ci`` in
    the CI step, ``TROIKA_FUZZ_EXAMPLES`` locally."""
    assert 0 < fast <= ci, (fast, ci)
    local = fuzz_mode() == "local"
    chosen: Callable[[Test], Test] = settings(
        max_examples=examples(fast=fast, ci=ci),
        deadline=None,
        derandomize=not local,
        database=DirectoryBasedExampleDatabase(".hypothesis/examples") if local else None,
        suppress_health_check=_HEALTH_CHECKS,
        print_blob=True,
    )
    return chosen
