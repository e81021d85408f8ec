"""Leases: the replicated lease table (``storage.lease.table``)."""

from storage.lease.table import (
    LEASE_EXISTS,
    LEASE_NOT_FOUND,
    LEASE_TTL_TOO_LARGE,
    LEASES_TOO_MANY,
    MAX_LEASE_TTL_S,
    NO_LEASE,
    PREFIX,
    Lease,
    LeaseError,
    LeaseTable,
)

__all__ = [
    "LEASES_TOO_MANY",
    "LEASE_EXISTS",
    "LEASE_NOT_FOUND",
    "LEASE_TTL_TOO_LARGE",
    "MAX_LEASE_TTL_S",
    "NO_LEASE",
    "PREFIX",
    "Lease",
    "LeaseError",
    "LeaseTable",
]
