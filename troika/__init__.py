"""troika: an etcd-compatible Raft key-value store on Trio, and its deterministic simulator.

This package is the composition root and the command line: it sits above `actors`, `sim` and
`bench`, picks the real or simulated network, disk and clock, and wires a member together.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

_VERSION_FALLBACK = "0.1.0"  # keep equal to [project] version in pyproject.toml (a test checks)

try:
    __version__: str = version("troika")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = _VERSION_FALLBACK
