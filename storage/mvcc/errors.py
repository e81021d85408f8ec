"""Errors the MVCC store raises for callers to handle (the API edge maps them to etcd's)."""

from __future__ import annotations


class MvccError(Exception):
    """Base of every error the MVCC store raises on purpose."""


class Compacted(MvccError):
    """The revision asked for was compacted away (etcd's ``ErrCompacted``)."""

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(f"revision {revision} is compacted (compacted up to {compact_revision})")
        self.revision = revision
        self.compact_revision = compact_revision


class FutureRevision(MvccError):
    """The revision asked for is past the store's current revision (etcd's ``ErrFutureRev``)."""

    def __init__(self, revision: int, current_revision: int) -> None:
        super().__init__(f"revision {revision} is in the future (current {current_revision})")
        self.revision = revision
        self.current_revision = current_revision
