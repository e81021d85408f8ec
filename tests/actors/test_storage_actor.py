"""The storage actor's early hand-off of durable committed entries, and the restart rule."""

from __future__ import annotations

import pytest

from actors.bootstrap import BootstrapError, commit_what_was_applied
from actors.raft import Entry, HardState, Ready
from actors.storage_actor import split_committed
from storage.kv import MemoryKeyValueStore
from storage.raft_store import HardStateRecord, LogRecord, RaftStore


def entry(index: int) -> Entry:
    return Entry(index=index, term=1, data=b"x")


def ready(entries: tuple[Entry, ...], committed: tuple[Entry, ...]) -> Ready:
    return Ready(
        soft_state=None, hard_state=HardState(term=1, vote=0, commit=9), snapshot=None,
        entries=entries, must_sync=bool(entries), messages=(), messages_after_persist=(),
        committed_entries=committed, read_states=(),
    )  # fmt: skip


def test_only_entries_below_the_first_new_one_go_before_the_save() -> None:
    committed = tuple(entry(i) for i in range(3, 8))
    early, late = split_committed(ready((entry(6), entry(7), entry(8)), committed))
    assert [e.index for e in early] == [3, 4, 5]
    assert [e.index for e in late] == [6, 7]
    assert split_committed(ready((), committed)) == (committed, ())
    assert split_committed(ready((entry(9),), committed)) == (committed, ())


async def test_a_restart_raises_the_commit_index_to_what_was_applied() -> None:
    store = RaftStore.open(MemoryKeyValueStore())
    records = [LogRecord(i, 1, 0, b"x") for i in range(1, 9)]
    await store.save(HardStateRecord(term=1, vote=2, commit=5), records, None, sync=True)
    await commit_what_was_applied(store, 7)
    assert store.hard_state() == HardStateRecord(term=1, vote=2, commit=7)
    await commit_what_was_applied(store, 6)  # never lowered
    assert store.hard_state() == HardStateRecord(term=1, vote=2, commit=7)
    with pytest.raises(BootstrapError, match="past the last log index"):
        await commit_what_was_applied(store, 9)
