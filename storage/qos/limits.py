"""The replicated tenant table: which key prefixes, users and roles are tenants and their limits.

A tenant is a key prefix (``/tenants/a/``) or, with auth on, a user or a role (``TenantKind``;
rates and open watches only: space quotas and lease counts, kept by the state machine from the
keys stored, belong to prefixes). Its limits
(``TenantLimits``, 0 meaning none) are set and deleted at runtime by ``QOS`` log entries
(``actors.envelope.EnvelopeKind.QOS``), applied by every member in log order, so every
member enforces the same limits. The table is an applied-state blob (``QOS_BLOB``) and
travels in Raft snapshots (``actors.state_machine``).

Which tenant a key belongs to: for rates and watches, the tenant with the **longest** prefix of
the key (one bucket is charged); for space quotas and lease counts, **every** tenant whose prefix
the key has (``/a/`` counts what ``/a/b/`` stores too). Tenants are few (``TENANTS_MAX``): both
lookups scan the table, and the request path asks only when the table is not empty.

Which caller tenant a request is charged to (``caller_tenants``): the caller's user tenant if
it has one; else every role tenant among its roles (each bucket is charged, so the tightest
binds: a role's bucket is shared by all its users); else, as without auth, the key's prefix
tenant. A caller tenant replaces the prefix tenant for that request's rates and, for a watch
create, for the count of open watches.

Entry bodies (CBOR): ``["set", prefix, {field: int, ...}]`` replaces a prefix tenant's limits,
``["delete", prefix]`` removes it; a user or role tenant adds its kind:
``["set", name, limits, "user"]``, ``["delete", name, "role"]``. Table records are
``[prefix, limits]`` or ``[name, limits, kind]``, so tables and entries written before users
and roles were tenants read unchanged. Limits are a map of the nonzero ones by name, so a limit
added later (``leases_max``) leaves older tables and entries readable as they were.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Literal

import cbor2

QOS_BLOB: Final = b"qos"
"""The applied-state blob holding the table."""
TENANTS_MAX: Final = 256
"""Tenants a cluster holds (a set past it is refused): every request scans them."""
PREFIX_BYTES_MAX: Final = 1024
LIMIT_MAX: Final = 1 << 62
NAME_BYTES_MAX: Final = 1024
"""A user or role tenant's name (UTF-8 bytes)."""

USER: Final = "user"
ROLE: Final = "role"
TenantKind = Literal["user", "role"]
CallerTenant = tuple[str, str]
"""A user or role tenant: (kind, name)."""
TenantId = bytes | CallerTenant
"""A tenant's key in the serving member's buckets: a prefix, or (kind, name)."""


class QosError(Exception):
    """A QoS request the table refuses (a bad prefix or limit, too many tenants)."""


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """One tenant's limits; 0 is no limit. Rates are per member serving the request."""

    read_requests_per_s: int = 0
    write_requests_per_s: int = 0
    read_bytes_per_s: int = 0
    write_bytes_per_s: int = 0
    watches_max: int = 0
    """Watches open on one member on keys of the tenant (a user's or role's: opened by it)."""
    keys_max: int = 0
    """Live keys stored under the prefix (the state machine refuses a write past it)."""
    stored_bytes_max: int = 0
    """Bytes of live keys and values stored under the prefix."""
    leases_max: int = 0
    """Distinct leases attached to live keys under the prefix (the state machine refuses a
    put that would attach one more)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if type(value) is not int or not 0 <= value <= LIMIT_MAX:
                raise QosError(f"{name} must be an integer from 0 to {LIMIT_MAX}")

    @property
    def has_quota(self) -> bool:
        """Whether the state machine must count this tenant's space."""
        return self.keys_max > 0 or self.stored_bytes_max > 0 or self.leases_max > 0

    @property
    def has_rates(self) -> bool:
        """Whether the serving member meters this tenant's requests."""
        return (
            self.read_requests_per_s > 0
            or self.write_requests_per_s > 0
            or self.read_bytes_per_s > 0
            or self.write_bytes_per_s > 0
        )

    def to_plain(self) -> dict[str, int]:
        """The nonzero limits, by field name."""
        return {name: value for name, value in asdict(self).items() if value}

    @classmethod
    def from_plain(cls, plain: object) -> TenantLimits:
        """Limits from a mapping of field names to integers (missing ones are 0).

        Raises:
            QosError: not such a mapping, or an unknown field.
        """
        if not isinstance(plain, dict) or not all(type(name) is str for name in plain):
            raise QosError("limits must be a mapping of names to integers")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(plain) - known)
        if unknown:
            raise QosError(f"unknown limit {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**plain)


def encode_set(prefix: bytes, limits: TenantLimits) -> bytes:
    """A ``QOS`` entry body setting ``prefix``'s limits."""
    return cbor2.dumps(["set", prefix, limits.to_plain()])


def encode_delete(prefix: bytes) -> bytes:
    """A ``QOS`` entry body deleting ``prefix``'s tenant."""
    return cbor2.dumps(["delete", prefix])


def encode_set_caller(kind: TenantKind, name: str, limits: TenantLimits) -> bytes:
    """A ``QOS`` entry body setting a user's or role's limits."""
    return cbor2.dumps(["set", name, limits.to_plain(), kind])


def encode_delete_caller(kind: TenantKind, name: str) -> bytes:
    """A ``QOS`` entry body deleting a user's or role's tenant."""
    return cbor2.dumps(["delete", name, kind])


def _check_caller(kind: object, name: object, limits: TenantLimits | None) -> CallerTenant:
    if kind not in (USER, ROLE):
        raise QosError(f"a tenant kind must be {USER!r} or {ROLE!r}")
    if type(name) is not str or not 0 < len(name.encode()) <= NAME_BYTES_MAX:
        raise QosError(f"a {kind} tenant's name must be 1 to {NAME_BYTES_MAX} bytes")
    if limits is not None and limits.has_quota:
        raise QosError(
            f"a {kind} tenant takes rates and watches_max only (keys, bytes, leases: prefixes)"
        )
    assert isinstance(kind, str)
    return kind, name


def _check_prefix(prefix: object) -> bytes:
    if type(prefix) is not bytes or not 0 < len(prefix) <= PREFIX_BYTES_MAX:
        raise QosError(f"a tenant prefix must be 1 to {PREFIX_BYTES_MAX} bytes")
    return prefix


class QosTable:
    """The tenants and their limits; ``version`` grows with every change (the serving
    member's buckets are rebuilt when it moves)."""

    def __init__(
        self,
        tenants: dict[bytes, TenantLimits] | None = None,
        callers: dict[CallerTenant, TenantLimits] | None = None,
    ) -> None:
        self.tenants: dict[bytes, TenantLimits] = dict(tenants or {})
        """Prefix tenants."""
        self.callers: dict[CallerTenant, TenantLimits] = dict(callers or {})
        """User and role tenants, by (kind, name)."""
        self.limited = bool(self.tenants or self.callers)
        """Whether any tenant is set: the request path's one test."""
        self.version = 0
        self.changed = False
        """Set by ``apply``; the state machine clears it when it persists the blob."""

    def __len__(self) -> int:
        return len(self.tenants) + len(self.callers)

    # -- applying the log ------------------------------------------------------------------

    def apply(self, body: bytes) -> tuple[TenantId, TenantLimits | None]:
        """Apply one ``QOS`` entry: (tenant, its limits now, None if deleted).

        Raises:
            QosError: a malformed entry or one the table refuses (it changes nothing).
        """
        try:
            item: Any = cbor2.loads(body)
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as error:
            raise QosError(f"qos entry is not cbor: {error}") from None
        if not isinstance(item, list) or not item:
            raise QosError("a qos entry must be [set, tenant, limits] or [delete, tenant]")
        if item[0] == "set" and len(item) in (3, 4):
            limits = TenantLimits.from_plain(item[2])
            tenant: TenantId = (
                _check_prefix(item[1])
                if len(item) == 3
                else _check_caller(item[3], item[1], limits)
            )
            if tenant not in self._of(tenant) and len(self) >= TENANTS_MAX:
                raise QosError(f"too many tenants (at most {TENANTS_MAX})")
            self._of(tenant)[tenant] = limits
            self._changed()
            return tenant, limits
        if item[0] == "delete" and len(item) in (2, 3):
            tenant = (
                _check_prefix(item[1]) if len(item) == 2 else _check_caller(item[2], item[1], None)
            )
            if self._of(tenant).pop(tenant, None) is None:
                raise QosError(f"no tenant {tenant!r}")
            self._changed()
            return tenant, None
        raise QosError("a qos entry must be [set, tenant, limits] or [delete, tenant]")

    def _of(self, tenant: TenantId) -> dict[Any, TenantLimits]:
        return self.tenants if isinstance(tenant, bytes) else self.callers

    def _changed(self) -> None:
        self.version += 1
        self.changed = True
        self.limited = bool(self.tenants or self.callers)

    # -- lookups ---------------------------------------------------------------------------

    def tenant_of(self, key: bytes) -> bytes | None:
        """The tenant with the longest prefix of ``key`` (rates and watches), if any."""
        best: bytes | None = None
        for prefix in self.tenants:
            if key.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        return best

    def caller_tenants(self, username: str, roles: Iterable[str]) -> list[CallerTenant]:
        """The user and role tenants a caller's requests are charged to (see the module
        docstring; empty: its key's prefix tenant, if any)."""
        if not self.callers or not username:
            return []
        user = (USER, username)
        if user in self.callers:
            return [user]
        return [(ROLE, role) for role in roles if (ROLE, role) in self.callers]

    def quota_tenants(self) -> dict[bytes, TenantLimits]:
        """The tenants with a space quota."""
        return {prefix: limits for prefix, limits in self.tenants.items() if limits.has_quota}

    # -- persisting ------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The blob (and the snapshot record)."""
        records: list[list[object]] = [
            [prefix, limits.to_plain()] for prefix, limits in sorted(self.tenants.items())
        ]
        records += [
            [name, limits.to_plain(), kind] for (kind, name), limits in sorted(self.callers.items())
        ]
        return cbor2.dumps(records)

    @classmethod
    def decode(cls, data: bytes | None) -> QosTable:
        """The table a blob holds (empty for None).

        Raises:
            ValueError: malformed.
        """
        if not data:
            return cls()
        try:
            item: Any = cbor2.loads(data)
            if not isinstance(item, list):
                raise QosError("the qos table must be a list")
            tenants = {}
            callers = {}
            for record in item:
                if not isinstance(record, list) or len(record) not in (2, 3):
                    raise QosError("a qos record must be [prefix, limits] or [name, limits, kind]")
                limits = TenantLimits.from_plain(record[1])
                if len(record) == 2:
                    tenants[_check_prefix(record[0])] = limits
                else:
                    callers[_check_caller(record[2], record[0], limits)] = limits
        except (cbor2.CBORDecodeError, QosError, TypeError, OverflowError) as error:
            raise ValueError(f"malformed qos table: {error}") from None
        return cls(tenants, callers)

    def to_json(self) -> list[dict[str, object]]:
        """The tenants for the HTTP API and the CLI (prefixes as latin-1-free UTF-8 text)."""
        return [
            {"prefix": prefix.decode("utf-8", "surrogateescape"), **limits.to_plain()}
            for prefix, limits in sorted(self.tenants.items())
        ] + [
            {kind: name, **limits.to_plain()}
            for (kind, name), limits in sorted(self.callers.items())
        ]
