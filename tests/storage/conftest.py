"""Backends for the storage contract tests: every test taking ``backend`` or ``kv`` runs on
RocksDB (fsync in a worker thread, and inline) and on the in-memory store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from storage.kv import KeyValueStore, MemoryKeyValueStore, RocksKeyValueStore


@dataclass
class Backend:
    """Opens a store, and opens it again after a clean close (a restart that loses nothing)."""

    name: str
    make: Callable[[], KeyValueStore]
    make_again: Callable[[KeyValueStore], KeyValueStore]
    opened: list[KeyValueStore] = field(default_factory=list)

    def open(self) -> KeyValueStore:
        store = self.make()
        self.opened.append(store)
        return store

    def reopen(self, store: KeyValueStore) -> KeyValueStore:
        store.close()
        again = self.make_again(store)
        self.opened.append(again)
        return again

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


def _memory() -> Backend:
    def make_again(store: KeyValueStore) -> KeyValueStore:
        assert isinstance(store, MemoryKeyValueStore)
        return store.reopen()

    return Backend("memory", MemoryKeyValueStore, make_again)


def _rocks(path: Path, *, fsync_in_thread: bool) -> Backend:
    def make() -> KeyValueStore:
        return RocksKeyValueStore(path, fsync_in_thread=fsync_in_thread)

    name = "rocksdb" if fsync_in_thread else "rocksdb-inline-fsync"
    return Backend(name, make, lambda _store: make())


@pytest.fixture(params=["memory", "rocksdb", "rocksdb-inline-fsync"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        chosen = _memory()
    else:
        chosen = _rocks(tmp_path / "db", fsync_in_thread=request.param == "rocksdb")
    yield chosen
    chosen.close_all()


@pytest.fixture
def kv(backend: Backend) -> KeyValueStore:
    return backend.open()
