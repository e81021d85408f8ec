"""AppliedState on every backend: the applied index moves with the data it covers."""

from __future__ import annotations

import pytest
import trio

from storage.applied_state import AppliedState
from storage.errors import InvalidWrite, StorageCorrupted
from storage.kv import KeyValueStore, MemoryKeyValueStore, WriteBatch
from tests.storage.conftest import Backend


def data(*pairs: tuple[bytes, bytes]) -> WriteBatch:
    batch = WriteBatch()
    for key, value in pairs:
        batch.put(key, value)
    return batch


async def test_nothing_is_applied_at_first(kv: KeyValueStore) -> None:
    applied = AppliedState(kv)
    assert applied.applied_index() == 0
    assert applied.get_blob(b"conf_state") is None


async def test_data_index_and_blobs_are_written_and_read_back(backend: Backend) -> None:
    kv = backend.open()
    applied = AppliedState(kv)
    await applied.commit(data((b"v2/a", b"1")), 7, blobs={b"conf_state": b"\x01\x02"})
    assert applied.applied_index() == 7
    assert kv.get(b"v2/a") == b"1"
    assert applied.get_blob(b"conf_state") == b"\x01\x02"
    await applied.commit(data((b"v2/b", b"2")), 9, sync=True)
    kv = backend.reopen(kv)
    again = AppliedState(kv)
    assert again.applied_index() == 9
    assert again.get_blob(b"conf_state") == b"\x01\x02"
    assert (kv.get(b"v2/a"), kv.get(b"v2/b")) == (b"1", b"2")


async def three_commits() -> MemoryKeyValueStore:
    """A synced commit of index 1, then unsynced commits of 2 (with a blob) and 3."""
    kv = MemoryKeyValueStore()
    applied = AppliedState(kv)
    await applied.commit(data((b"k1", b"v")), 1, sync=True)
    await applied.commit(data((b"k2", b"v")), 2, blobs={b"members": b"m2"})
    await applied.commit(data((b"k3", b"v")), 3)
    return kv


@pytest.mark.parametrize(("kept", "index"), [(0, 1), (1, 2), (2, 3)])
async def test_a_crash_keeps_data_and_index_together(kept: int, index: int) -> None:
    restarted = (await three_commits()).crash(keep_unsynced_batches=kept)
    after = AppliedState(restarted)
    assert after.applied_index() == index
    present = [key for key in (b"k1", b"k2", b"k3") if restarted.get(key) is not None]
    assert present == [b"k1", b"k2", b"k3"][:index]
    assert after.get_blob(b"members") == (b"m2" if index >= 2 else None)


async def test_the_applied_index_never_goes_down(kv: KeyValueStore) -> None:
    applied = AppliedState(kv)
    await applied.commit(data((b"a", b"1")), 5)
    await applied.commit(data((b"b", b"2")), 5)  # the same index again is fine
    with pytest.raises(InvalidWrite, match="goes down"):
        await applied.commit(data((b"c", b"3")), 4)
    with pytest.raises(ValueError):
        await applied.commit(data((b"c", b"3")), -1)
    assert kv.get(b"c") is None
    assert AppliedState(kv).applied_index() == 5


async def test_a_batch_that_touches_the_applied_keys_is_refused(kv: KeyValueStore) -> None:
    applied = AppliedState(kv)
    sneaky = WriteBatch()
    sneaky.put(b"x", b"1")
    sneaky.delete_range(b"a", b"b")  # covers b"applied/..."
    with pytest.raises(InvalidWrite, match="ours"):
        await applied.commit(sneaky, 1)
    with pytest.raises(TypeError):
        await applied.commit(data((b"y", b"2")), 1, blobs={b"conf": "text"})  # type: ignore[dict-item]
    assert kv.get(b"x") is None
    assert kv.get(b"y") is None
    assert applied.applied_index() == 0


async def test_a_cancelled_commit_writes_nothing(kv: KeyValueStore) -> None:
    applied = AppliedState(kv)
    with trio.CancelScope() as scope:
        scope.cancel()
        await applied.commit(data((b"k", b"v")), 1, sync=True)
    assert applied.applied_index() == 0
    assert kv.get(b"k") is None


async def test_corrupt_values_are_refused(kv: KeyValueStore) -> None:
    applied = AppliedState(kv)
    await applied.commit(WriteBatch(), 3, blobs={b"conf": b"c"})
    good = kv.get(b"applied/blob/conf")
    assert good is not None
    kv.apply(data((b"applied/blob/conf", good[:-1] + bytes([good[-1] ^ 1]))))
    with pytest.raises(StorageCorrupted, match="checksum"):
        applied.get_blob(b"conf")
    kv.apply(data((b"applied/index", b"")))
    with pytest.raises(StorageCorrupted, match="too short"):
        AppliedState(kv)


async def test_a_prefix_keeps_two_states_apart(kv: KeyValueStore) -> None:
    one = AppliedState(kv, prefix=b"one/")
    two = AppliedState(kv, prefix=b"two/")
    await one.commit(WriteBatch(), 4)
    await two.commit(WriteBatch(), 8)
    assert AppliedState(kv, prefix=b"one/").applied_index() == 4
    assert AppliedState(kv, prefix=b"two/").applied_index() == 8
