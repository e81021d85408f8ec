"""The cluster's alarms (etcd's ``alarm`` store): which member raised which alarm.

Alarms are replicated state, as in etcd: an ``AlarmRequest`` (GET, ACTIVATE, DEACTIVATE) is a
v3 entry of the log, applied here on every member in log order, so every member answers
``alarm list`` alike. While a NOSPACE alarm is active, a member refuses a put, a txn that puts
or a lease grant (``adds_data``) with "etcdserver: mvcc: database space exceeded" when it
arrives (``actors.v3_backend``); deletes, compactions and revokes go on, so an operator can
make room, defragment and disarm.

Unlike etcd's ``applierV3Capped``, applying an entry never depends on the alarms (a write
proposed just before the alarm was applied is still applied): refusing at arrival is enough,
and keeps what applying does a function of the log alone.

Who raises NOSPACE: the member that finds its store over ``--quota-backend-bytes`` when a
client write arrives (``actors.v3_backend``) proposes ACTIVATE for itself and refuses the write,
as etcd's quota check does. Disarming does not free space: the next write that finds the store
still over the quota raises the alarm again.

The table is an applied-state blob (``ALARMS_BLOB``), written with the applied index, and
travels in Raft snapshots as the ``snapshot/alarms`` record (``actors.state_machine``): a
member that catches up through a snapshot holds its peers' alarms; see docs/maintenance.md.
"""

from __future__ import annotations

import cbor2

from net.etcdpb import raft_internal_pb2, rpc_pb2

ALARMS_BLOB = b"alarms"
"""The applied-state blob holding the table."""
ALARMS_MAX = 1024
"""Alarms kept (two types per member; far above any cluster's size)."""

Alarm = tuple[int, int]
"""(member id, ``rpc_pb2.AlarmType`` value)."""


class AlarmTable:
    """The active alarms, changed only by applying ``AlarmRequest`` entries."""

    def __init__(self, alarms: set[Alarm] | None = None) -> None:
        self._alarms: set[Alarm] = set(alarms or ())
        self.changed = False
        """Whether the table changed since the state machine last persisted it."""

    def active(self, alarm_type: int = rpc_pb2.NONE) -> list[Alarm]:
        """The active alarms of ``alarm_type`` (every one for NONE), sorted."""
        return sorted(a for a in self._alarms if alarm_type in (rpc_pb2.NONE, a[1]))

    def no_space(self) -> bool:
        """Whether a NOSPACE alarm is active (writes that add data are refused)."""
        return any(alarm_type == rpc_pb2.NOSPACE for _, alarm_type in self._alarms)

    def apply(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        """etcd's ``applierV3backend.Alarm``: GET lists (of one type, or all), ACTIVATE and
        DEACTIVATE answer the alarm they changed (nothing if it already was so)."""
        response = rpc_pb2.AlarmResponse()
        alarm = (request.memberID, int(request.alarm))
        if request.action == rpc_pb2.AlarmRequest.GET:
            found = self.active(request.alarm)
        elif request.action == rpc_pb2.AlarmRequest.ACTIVATE:
            found = self._activate(alarm)
        elif request.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            found = self._deactivate(alarm)
        else:
            found = []
        response.alarms.extend(
            rpc_pb2.AlarmMember(memberID=member_id, alarm=rpc_pb2.AlarmType.ValueType(alarm_type))
            for member_id, alarm_type in found
        )
        return response

    def _activate(self, alarm: Alarm) -> list[Alarm]:
        if alarm[1] == rpc_pb2.NONE or alarm in self._alarms or len(self._alarms) >= ALARMS_MAX:
            return []
        self._alarms.add(alarm)
        self.changed = True
        return [alarm]

    def _deactivate(self, alarm: Alarm) -> list[Alarm]:
        if alarm not in self._alarms:
            return []
        self._alarms.discard(alarm)
        self.changed = True
        return [alarm]

    def encode(self) -> bytes:
        """For the applied-state blob."""
        return cbor2.dumps([list(alarm) for alarm in self.active()])

    @classmethod
    def decode(cls, data: bytes | None) -> AlarmTable:
        """Parse what ``encode`` made (an empty table for None).

        Raises:
            ValueError: malformed.
        """
        if data is None:
            return cls()
        try:
            items = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError) as error:
            raise ValueError(f"alarm table is not cbor: {error}") from None
        if not isinstance(items, list) or len(items) > ALARMS_MAX:
            raise ValueError("alarm table must be a short list")
        alarms: set[Alarm] = set()
        for item in items:
            well_formed = isinstance(item, list) and len(item) == 2
            if not (well_formed and all(type(value) is int for value in item)):
                raise ValueError("an alarm must be [member id, type]")
            alarms.add((item[0], item[1]))
        return cls(alarms)


def adds_data(request: raft_internal_pb2.InternalRaftRequest) -> bool:
    """Whether etcd refuses ``request`` under the NOSPACE alarm."""
    if request.HasField("put") or request.HasField("lease_grant"):
        return True
    return request.HasField("txn") and _txn_puts(request.txn)


def _txn_puts(txn: rpc_pb2.TxnRequest) -> bool:
    for op in (*txn.success, *txn.failure):
        if op.HasField("request_put"):
            return True
        if op.HasField("request_txn") and _txn_puts(op.request_txn):
            return True
    return False
