"""Space quotas: keys, bytes and distinct leases stored under each tenant prefix that has one,
and the check a write must pass before the state machine applies it.

Both are functions of the applied log alone, so every member refuses the same writes. The usage
is kept from the MVCC store's events (``observe``, as ``LeaseTable.observe`` follows them) and
rebuilt from the store's live keys when the table changes or the store is loaded (``rebuild``:
a range over each quota tenant's prefix). A key's bytes are its key and value lengths. A
tenant's leases are counted as live keys per lease id (a lease stops counting when its last key
under the prefix is deleted, overwritten without it, or revoked), so the count needs nothing
from the lessor and is the same on every member.

``refusal`` looks at a write before it runs: a put (or the puts of the branch a txn will take,
nested txns included) that adds a key to a tenant at its ``keys_max``, or takes its bytes past
``stored_bytes_max``. Deletes are not credited in advance (a txn that deletes and puts under a
full tenant is refused: conservative, as etcd's quota estimates a txn's cost without running
it). Overwrites that shrink a value always pass, so a tenant over its quota (a quota lowered
under its usage) can still make room. Likewise for ``leases_max``: a put is refused only when it
attaches a lease the tenant's keys do not hold yet and the tenant already holds ``leases_max``
(a put that moves a key off a lease is not credited in advance); a put without a lease, or with
one the tenant already counts, always passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from storage.kv import prefix_end
from storage.mvcc.model import EventType, KeyValue, RangeResult, TxnEvents
from storage.qos.limits import TenantLimits


class LiveReader(Protocol):
    """What the quota reads of the MVCC store: live versions of keys."""

    def range(self, key: bytes, range_end: bytes = b"") -> RangeResult: ...


class PlannedPut(NamedTuple):
    """A put a write will make, as the quota sees it before it runs."""

    key: bytes
    new_bytes: int | None
    """Key and value bytes stored after it (None: the value is kept, ``ignore_value``)."""
    lease: int | None = None
    """The lease it attaches (0: none; None: the key's own is kept, ``ignore_lease``)."""


@dataclass(slots=True)
class Usage:
    """Live keys, their bytes and their leases under one prefix."""

    keys: int = 0
    stored_bytes: int = 0
    leases: dict[int, int] = field(default_factory=dict)
    """Live keys under the prefix per lease id attached to them (never 0, never a 0 count)."""

    def attach(self, lease: int, keys: int) -> None:
        """Count ``keys`` (negative: fewer) more live keys with ``lease``."""
        if lease:
            left = self.leases.get(lease, 0) + keys
            if left:
                self.leases[lease] = left
            else:
                del self.leases[lease]

    def to_json(self) -> dict[str, int]:
        return {"keys": self.keys, "stored_bytes": self.stored_bytes, "leases": len(self.leases)}


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
                usage.attach(kv.lease, 1)
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
                        usage.attach(prev.lease, -1)
                    if event.type is EventType.PUT:
                        usage.keys += 1
                        usage.stored_bytes += kv_bytes(event.kv)
                        usage.attach(event.kv.lease, 1)

    def refusal(self, puts: Iterable[PlannedPut], store: LiveReader) -> bytes | None:
        """The tenant prefix whose quota these puts would exceed, or None if they fit."""
        if not self.usage:
            return None
        added: dict[bytes, Usage] = {}
        for key, new_bytes, lease in puts:
            old = store.range(key).kvs
            old_bytes = kv_bytes(old[0]) if old else 0
            for prefix, usage in self.usage.items():
                if key.startswith(prefix):
                    delta = added.setdefault(prefix, Usage())
                    delta.keys += 0 if old else 1
                    delta.stored_bytes += 0 if new_bytes is None else new_bytes - old_bytes
                    if lease and lease not in usage.leases:  # a lease new to the tenant
                        delta.leases[lease] = 1
        for prefix, delta in sorted(added.items()):
            if _exceeds(self.quotas[prefix], self.usage[prefix], delta):
                return prefix
        return None


def _exceeds(limits: TenantLimits, usage: Usage, delta: Usage) -> bool:
    if limits.keys_max and delta.keys > 0 and usage.keys + delta.keys > limits.keys_max:
        return True
    new_leases = len(delta.leases)
    if limits.leases_max and new_leases and len(usage.leases) + new_leases > limits.leases_max:
        return True
    if not limits.stored_bytes_max or delta.stored_bytes <= 0:
        return False
    return usage.stored_bytes + delta.stored_bytes > limits.stored_bytes_max
