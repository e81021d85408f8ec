"""``troika del-prefix P``: delete every key under a prefix, safely.

Why: ``etcdctl del --prefix`` deletes everything in one revision. Under a prefix with a
million keys that is one huge Raft entry's worth of work on every member at once (a million
tombstones and events in one apply, a watch response of a million events), and the cluster
stalls. Here the keys go in bounded batches at a bounded rate:

- each batch reads the next ``batch_keys`` keys from a cursor (a keys-only, linearizable
  range with a limit) and deletes exactly their sub-range ``[first, last]`` with one
  DeleteRange: one revision per batch, ordinary DELETE events for watchers;
- before each batch the tool waits so that keys deleted never run ahead of ``rate_keys_s``;
- the cursor moves past the batch, so keys written under the prefix behind it during the run
  are left (the run ends); a later run takes them.

Resuming after a crash (of the tool, or of the connection) needs no state: deleted keys are
gone, so a new run starts again from the prefix and its first batch is the first key left.
A batch is atomic (one DeleteRange), so a crash leaves every batch done or not done.

``--dry-run`` deletes nothing: it reports the keys, their bytes and the revisions kept under
the prefix (``/troika/v1/usage``, from one member) and the batches and time a run would take.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from net.etcdpb import rpc_pb2

BATCH_KEYS_DEFAULT: Final = 500
BATCH_KEYS_MAX: Final = 10_000
RATE_KEYS_S_DEFAULT: Final = 5_000.0
RATE_KEYS_S_MAX: Final = 1_000_000.0


class KvClient(Protocol):
    """The two calls the deletion makes (``net.v3.client.V3Client``)."""

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse: ...

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch done: the sub-range it deleted, how many keys, at which revision."""

    first_key: bytes
    last_key: bytes
    deleted: int
    revision: int


@dataclass(frozen=True, slots=True)
class Summary:
    """A whole run: batches, keys deleted, the revisions they took."""

    batches: int
    deleted: int
    first_revision: int
    last_revision: int


def prefix_range_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix``."""
    for index in range(len(prefix) - 1, -1, -1):
        if prefix[index] < 0xFF:
            return prefix[:index] + bytes([prefix[index] + 1])
    return b"\x00"


def check_plan(prefix: bytes, batch_keys: int, rate_keys_s: float) -> None:
    """Raises ValueError for an empty prefix (every key) or bounds out of range."""
    if not prefix:
        raise ValueError("refusing an empty prefix (it would delete every key)")
    if not 1 <= batch_keys <= BATCH_KEYS_MAX:
        raise ValueError(f"--batch must be between 1 and {BATCH_KEYS_MAX}")
    if not 0 < rate_keys_s <= RATE_KEYS_S_MAX:
        raise ValueError(f"--rate must be above 0 and at most {RATE_KEYS_S_MAX:g} keys/s")


def planned_seconds(keys: int, batch_keys: int, rate_keys_s: float) -> tuple[int, float]:
    """(batches, the least seconds the rate allows) for ``keys`` keys."""
    return math.ceil(keys / batch_keys), keys / rate_keys_s


async def delete_prefix(
    client: KvClient,
    prefix: bytes,
    *,
    batch_keys: int = BATCH_KEYS_DEFAULT,
    rate_keys_s: float = RATE_KEYS_S_DEFAULT,
    on_batch: Callable[[Batch], Awaitable[None] | None] | None = None,
) -> Summary:
    """Delete the keys under ``prefix`` in batches; see the module docstring.

    Raises:
        ValueError: see :func:`check_plan`.
        RpcError, HttpError: the cluster's failure (the batches done stay done).
    """
    check_plan(prefix, batch_keys, rate_keys_s)
    end = prefix_range_end(prefix)
    cursor = prefix
    started_s = trio.current_time()
    deleted = batches = 0
    first_revision = last_revision = 0
    while True:
        await trio.sleep_until(started_s + deleted / rate_keys_s)
        listed = await client.range(
            rpc_pb2.RangeRequest(key=cursor, range_end=end, keys_only=True, limit=batch_keys)
        )
        if not listed.kvs:
            break
        first, last = listed.kvs[0].key, listed.kvs[-1].key
        reply = await client.delete_range(
            rpc_pb2.DeleteRangeRequest(key=first, range_end=last + b"\0")
        )
        batch = Batch(first, last, reply.deleted, reply.header.revision)
        batches += 1
        deleted += reply.deleted
        first_revision = first_revision or batch.revision
        last_revision = batch.revision
        if on_batch is not None:
            done = on_batch(batch)
            if done is not None:
                await done
        cursor = last + b"\0"
        if not listed.more:
            break
    return Summary(batches, deleted, first_revision, last_revision)
