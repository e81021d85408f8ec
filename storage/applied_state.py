"""The applied index, written in the same batch as the state it covers.

The apply stage changes the state machines' keys and then says how far it got: if the two
were separate writes, a crash between them would make a restart skip or repeat entries. So
``AppliedState.commit`` adds the applied index (and any named blobs that must move with it,
such as the configuration and the membership) to the caller's own batch and writes that one
batch: data, applied index and blobs are atomic, with or without an fsync. A crash loses a
suffix of unsynced commits, never half of one.

Keys, under a prefix (``b"applied/"`` by default), every value sealed (``storage.sealed``)::

    index           the applied index (8 bytes big-endian)
    blob/<name>     a named opaque blob

The caller's batch must not touch these keys; ``commit`` refuses one that does.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import trio

from storage.errors import InvalidWrite
from storage.kv import KeyValueStore, WriteBatch, prefix_end
from storage.sealed import check_u64, seal, unpack_exact, unseal

DEFAULT_PREFIX = b"applied/"

_INDEX = struct.Struct(">Q")


class AppliedState:
    """The applied index and named blobs of one member's state machines, over a KeyValueStore.

    Raises (from the constructor):
        StorageCorrupted: the stored applied index fails validation.
    """

    def __init__(self, kv: KeyValueStore, *, prefix: bytes = DEFAULT_PREFIX) -> None:
        self._kv = kv
        self._prefix = prefix
        self._prefix_end = prefix_end(prefix)
        self._index_key = prefix + b"index"
        self._blob_prefix = prefix + b"blob/"
        value = kv.get(self._index_key)
        self._applied_index = 0
        if value is not None:
            (self._applied_index,) = unpack_exact(
                self._index_key, _INDEX, unseal(self._index_key, value)
            )

    def applied_index(self) -> int:
        """The index of the last entry applied and written (0 before the first commit)."""
        return self._applied_index

    def get_blob(self, name: bytes) -> bytes | None:
        """The blob last committed under ``name``, or None.

        Raises:
            StorageCorrupted: the stored blob fails validation.
        """
        key = self._blob_prefix + name
        value = self._kv.get(key)
        if value is None:
            return None
        return bytes(unseal(key, value))

    async def commit(
        self,
        batch: WriteBatch,
        applied_index: int,
        *,
        blobs: Mapping[bytes, bytes] | None = None,
        sync: bool = False,
    ) -> None:
        """Write ``batch`` with the applied index and ``blobs`` added to it, atomically.

        ``batch`` gains the puts (the caller should not reuse it). All or nothing under
        cancellation, like ``KeyValueStore.write``. Unsynced by default: the Raft log is the
        durable record, and any later fsync of the same store (the next Raft save) makes this
        durable too.

        Raises:
            ValueError: ``applied_index`` is not a valid index.
            TypeError: a blob or its name is not bytes.
            InvalidWrite: ``applied_index`` is below the current one, or ``batch`` touches
                this object's keys; nothing was written.
        """
        check_u64("applied_index", applied_index)
        if applied_index < self._applied_index:
            raise InvalidWrite(
                f"applied index goes down from {self._applied_index} to {applied_index}"
            )
        if batch.touches(self._prefix, self._prefix_end):
            raise InvalidWrite(f"the batch writes keys under {self._prefix!r}, which are ours")
        blobs = blobs or {}
        for name, blob in blobs.items():
            if type(name) is not bytes or type(blob) is not bytes:
                raise TypeError(f"blob {name!r}: names and blobs must be bytes")
        for name, blob in blobs.items():
            batch.put(self._blob_prefix + name, seal(blob))
        batch.put(self._index_key, seal(_INDEX.pack(applied_index)))

        await trio.lowlevel.checkpoint_if_cancelled()
        self._kv.apply(batch)
        self._applied_index = applied_index
        if sync:
            with trio.CancelScope(shield=True):
                await self._kv.sync()
        else:
            # Uncancellable too (the batch is applied), without a CancelScope's cost per batch.
            await trio.lowlevel.cancel_shielded_checkpoint()
