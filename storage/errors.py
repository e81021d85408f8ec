"""Errors the storage layer raises for callers to handle.

Every error here is a ``StorageError``. Broken invariants of our own code are assertions; these
are the conditions a caller meets at run time: a log position that is gone or not there yet, a
store that is closed or locked, bytes on disk that fail validation, a write that would break an
invariant of the store.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the storage layer raises on purpose."""


class StorageClosed(StorageError):
    """The store was closed (or handed its data on after a crash); it takes no more calls."""


class StorageLocked(StorageError):
    """The store's directory is already open, in another process or in this one."""


class StorageFailed(StorageError):
    """A write or an fsync failed in the engine.

    Whether the data reached the disk is unknown (an fsync that failed once cannot be retried
    safely), so the store refuses every later write: the member must stop and restart.
    """


class StorageCorrupted(StorageError):
    """Bytes read from the store fail validation: a checksum, a length, a version, an index.

    Raised instead of returning anything built from those bytes.
    """


class InvalidWrite(StorageError, ValueError):
    """A write asked for would break an invariant of the store (a gap in the log, a term or a
    commit index going backwards, a batch over its size limit); nothing was written."""


class LogCompacted(StorageError):
    """The requested log position was compacted away (it is below ``first_index() - 1``)."""


class LogUnavailable(StorageError):
    """The requested log position is past the last index."""


class SnapshotOutOfDate(StorageError):
    """A snapshot is not newer than the one the store already holds; nothing was written."""
