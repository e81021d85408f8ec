"""The storage actor (persist, then release, then say so) and the restart rule."""

from __future__ import annotations

import pytest
import trio

from actors.bootstrap import BootstrapError, commit_what_was_applied
from actors.raft import Entry, HardState, Message, MessageType, PersistedUpTo, StorageAppend
from actors.raft_actor import Persisted, RaftInput
from actors.storage_actor import StorageActor
from storage.kv import MemoryKeyValueStore
from storage.raft_store import HardStateRecord, LogRecord, RaftStore


def entry(index: int, term: int = 1) -> Entry:
    return Entry(index=index, term=term, data=b"x")


ACK = Message(MessageType.APPEND_RESPONSE, recipient=2, sender=1, term=1, index=3)


class Recorder:
    """The store's saves and the sent messages, in one timeline."""

    def __init__(self, store: RaftStore) -> None:
        self.events: list[str] = []
        self.store = store
        real_save = store.save

        async def save(*args: object, **kwargs: object) -> None:
            await real_save(*args, **kwargs)  # type: ignore[arg-type]
            self.events.append(f"save sync={kwargs['sync']}")

        store.save = save  # type: ignore[method-assign]

    def send(self, message: Message) -> None:
        self.events.append(f"send {message.type.name} {message.index}")


async def test_an_append_is_saved_then_its_messages_leave_then_raft_hears() -> None:
    store = RaftStore.open(MemoryKeyValueStore())
    recorder = Recorder(store)
    appends, inbox = trio.open_memory_channel[StorageAppend](1)
    to_raft, raft_inbox = trio.open_memory_channel[RaftInput](4)
    actor = StorageActor(store, inbox, to_raft, recorder.send)
    first = StorageAppend(HardState(1, 0, 0), None, (entry(1), entry(2), entry(3)), True, (ACK,))
    only_messages = StorageAppend(None, None, (), False, (ACK,))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run)
        await appends.send(first)
        assert await raft_inbox.receive() == Persisted(PersistedUpTo(3, 1, 0))
        await appends.send(only_messages)
        assert await raft_inbox.receive() == Persisted(PersistedUpTo(0, 0, 0))
        nursery.cancel_scope.cancel()
    assert recorder.events == ["save sync=True", "send APPEND_RESPONSE 3", "send APPEND_RESPONSE 3"]
    assert store.last_index() == 3
    assert store.hard_state() == HardStateRecord(term=1, vote=0, commit=0)


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
