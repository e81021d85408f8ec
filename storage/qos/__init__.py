"""Per-tenant QoS (issue 16 item 3): a tenant is a key prefix (or, with auth, a user or role)
with limits.

- ``limits``: the replicated table of tenants and their limits (``QosTable``), changed only by
  applying ``QOS`` log entries, so every member holds the same;
- ``bucket``: token buckets for request and byte rates, on the serving member's clock;
- ``quota``: keys, bytes and distinct leases stored under each prefix with a space or lease
  quota, kept by the state machine from the MVCC store's events, and the admission check
  applied before a write.
"""

from storage.qos.bucket import TokenBucket
from storage.qos.limits import QosError, QosTable, TenantLimits
from storage.qos.quota import QuotaUsage

__all__ = ["QosError", "QosTable", "QuotaUsage", "TenantLimits", "TokenBucket"]
