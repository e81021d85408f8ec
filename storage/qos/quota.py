"""Space quotas: keys and bytes stored under each tenant prefix that has one, and the check a
write must pass before the state machine applies it.

Both are functions of the applied log alone, so every member refuses the same writes. The usage
is kept from the MVCC store's events (``observe``, as ``LeaseTable.observe`` follows them) and
rebuilt from the store's live keys when the table changes or the store is loaded (``rebuild``:
a range over each quota tenant's prefix). A key's bytes are its key and value lengths.

``refusal`` looks at a write before it runs: a put (or the puts of the branch a txn will take,
nested txns included) that adds a key to a tenant at its ``keys_max``, or takes its bytes past
``stored_bytes_max``. Deletes are not credited in advance (a txn that deletes and puts under a
full tenant is refused: conservative, as etcd's quota estimates a txn's cost without running
it). Overwrites that shrink a value always pass, so a tenant over its quota (a quota lowered
under its usage) can still make room.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from storage.kv import prefix_end
from storage.mvcc.model import EventType, KeyValue, RangeResult, TxnEvents
from storage.qos.limits import TenantLimits


class LiveReader(Protocol):
    """What the quota reads of the MVCC store: live versions of keys."""

    def range(self, key: bytes, range_end: bytes = b"") -> RangeResult: ...


@dataclass(slots=True)
class Usage:
    """Live keys and their bytes under one prefix."""

    keys: int = 0
    stored_bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"keys": self.keys, "stored_bytes": self.stored_bytes}


def kv_bytes(kv: KeyValue) -> int:
    """What a live key costs its tenants."""
    return len(kv.key) + len(kv.value)


class QuotaUsage:
    """Usage of every tenant with a quota (the others are not counted)."""

    def __init__(self) -> None:
        self.quotas: dict[bytes, TenantLimits] = {}
        self.usage: dict[bytes, Usage] = {}

    def rebuild(self, quotas: dict[bytes, TenantLimits], store: LiveReader) -> None:
        """Count the live keys under each quota tenant's prefix from the store."""
        self.quotas = dict(quotas)
        self.usage = {}
        for prefix in self.quotas:
            usage = Usage()
            for kv in store.range(prefix, prefix_end(prefix)).kvs:
                usage.keys += 1
                usage.stored_bytes += kv_bytes(kv)
            self.usage[prefix] = usage

    def _covering(self, key: bytes) -> Iterator[Usage]:
        for prefix, usage in self.usage.items():
            if key.startswith(prefix):
                yield usage

    def observe(self, events: Iterable[TxnEvents]) -> None:
        """Follow the store's writes."""
        if not self.usage:
            return
        for txn in events:
            for event in txn.events:
                prev = event.prev_kv if event.prev_kv and not event.prev_kv.is_tombstone else None
                for usage in self._covering(event.kv.key):
                    if prev is not None:
                        usage.keys -= 1
                        usage.stored_bytes -= kv_bytes(prev)
                    if event.type is EventType.PUT:
                        usage.keys += 1
                        usage.stored_bytes += kv_bytes(event.kv)

    def refusal(self, puts: Iterable[tuple[bytes, int]], store: LiveReader) -> bytes | None:
        """The tenant prefix whose quota these puts ((key, bytes after) each) would exceed,
        or None if they fit."""
        if not self.usage:
            return None
        added: dict[bytes, Usage] = {}
        for key, new_bytes in puts:
            old = store.range(key).kvs
            old_bytes = kv_bytes(old[0]) if old else 0
            for prefix in self.usage:
                if key.startswith(prefix):
                    delta = added.setdefault(prefix, Usage())
                    delta.keys += 0 if old else 1
                    delta.stored_bytes += new_bytes - old_bytes
        for prefix, delta in sorted(added.items()):
            if _exceeds(self.quotas[prefix], self.usage[prefix], delta):
                return prefix
        return None


def _exceeds(limits: TenantLimits, usage: Usage, delta: Usage) -> bool:
    if limits.keys_max and delta.keys > 0 and usage.keys + delta.keys > limits.keys_max:
        return True
    if not limits.stored_bytes_max or delta.stored_bytes <= 0:
        return False
    return usage.stored_bytes + delta.stored_bytes > limits.stored_bytes_max
