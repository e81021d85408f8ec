"""etcd's KV RPCs (Range, Put, DeleteRange, Txn, Compact) over the MVCC store.

Requests and responses are etcd 3.4's protobuf messages; failures are ``RpcError`` from
``net.v3.errors``. The rules follow etcd's ``applierV3backend`` (``etcdserver/apply.go``):

- Range reads ``limit + 1`` versions to know ``more``, but everything when it must sort or
  filter; ``count`` is taken before the min/max filters and the limit; ``sort_order`` NONE
  with a target other than KEY sorts ascending; sorting comes before the limit. Ties keep
  key order (etcd's sort is not stable, so its order of ties is arbitrary).
- Put checks its lease before anything (``lease_exists``); ``ignore_value``/``ignore_lease``
  on a missing key fail with "key not found".
- Txn evaluates every compare, nested ones included, against the store before any write;
  then checks the puts (ignore flags, leases) and the ranges' revisions on the chosen path;
  only then writes, in one revision. A missing key compares as zero, except that a VALUE
  compare on a missing key is false whatever the operator. Each sub-response header holds
  only the revision at that point of the txn (a nested txn's header is present but empty).
- Top-level response headers carry only ``revision``; the member fills in the rest.

``apply`` is the entry point for the log: it never raises for a request, so a bad entry is
an outcome for the proposer, not a crash of the apply stage. Request validation that etcd
does before Raft (empty key, duplicate keys in a txn, too many operations) is the service's;
here such input is still handled without a crash (see ``_put`` for the one choice it needs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from net.etcdpb import kv_pb2, raft_internal_pb2, rpc_pb2
from net.v3 import errors
from net.v3.errors import RpcError
from storage.mvcc import Compacted, FutureRevision, KeyValue, MvccStore, RangeResult, WriteTxn

logger = logging.getLogger(__name__)

_RangeRequest = rpc_pb2.RangeRequest
_Compare = rpc_pb2.Compare

KvResponse = (
    rpc_pb2.RangeResponse
    | rpc_pb2.PutResponse
    | rpc_pb2.DeleteRangeResponse
    | rpc_pb2.TxnResponse
    | rpc_pb2.CompactionResponse
)

_SORT_KEYS: dict[int, Callable[[KeyValue], bytes | int]] = {
    _RangeRequest.KEY: lambda kv: kv.key,
    _RangeRequest.VERSION: lambda kv: kv.version,
    _RangeRequest.CREATE: lambda kv: kv.create_revision,
    _RangeRequest.MOD: lambda kv: kv.mod_revision,
    _RangeRequest.VALUE: lambda kv: kv.value,
}


_COMPARED_NUMBERS: dict[int, str] = {
    _Compare.VERSION: "version",
    _Compare.CREATE: "create_revision",
    _Compare.MOD: "mod_revision",
    _Compare.LEASE: "lease",
}
"""Compare targets on numbers: the field of both the KeyValue and the Compare."""


def no_leases(_lease: int) -> bool:
    """The lease check before leases exist: no lease exists."""
    return False


class _Reader(Protocol):
    """The store or its open write txn: what a range reads from."""

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> RangeResult: ...


@dataclass(frozen=True, slots=True)
class _Path:
    """Which branch a txn takes, and the paths of the txns nested in that branch, in order."""

    succeeded: bool
    nested: tuple[_Path, ...] = field(default=())


def to_pb(kv: KeyValue, *, keys_only: bool = False) -> kv_pb2.KeyValue:
    """The protobuf form of a version (without its value if ``keys_only``)."""
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=b"" if keys_only else kv.value,
        lease=kv.lease,
    )


def _rpc_error(error: Compacted | FutureRevision) -> RpcError:
    if isinstance(error, Compacted):
        return errors.compacted()
    return errors.future_revision()


class KvApplier:
    """etcd's KV semantics over one ``MvccStore``.

    Args:
        store: the store (the applier is its only writer).
        lease_exists: whether a lease id is granted (a put with another lease fails with
            "requested lease not found"); by default no lease exists.
    """

    def __init__(self, store: MvccStore, *, lease_exists: Callable[[int], bool] = no_leases):
        self._store = store
        self._lease_exists = lease_exists
        self.planted_first_compare_only = False
        """A planted bug (``actors.bootstrap.TXN_FIRST_COMPARE_ONLY``), test only."""

    @property
    def store(self) -> MvccStore:
        """The store this applier writes."""
        return self._store

    # -- the log's entry point ------------------------------------------------------------

    def apply(self, request: raft_internal_pb2.InternalRaftRequest) -> KvResponse | RpcError | None:
        """Apply one KV request from the log: its response, or the error as a value.

        Returns:
            None if the request holds no KV operation (leases, auth, ... are not ours).
        """
        try:
            if request.HasField("put"):
                return self.put(request.put)
            if request.HasField("delete_range"):
                return self.delete_range(request.delete_range)
            if request.HasField("txn"):
                return self.txn(request.txn)
            if request.HasField("compaction"):
                return self.compact(request.compaction)
            if request.HasField("range"):
                return self.range(request.range)
        except RpcError as error:
            return error
        return None

    # -- the RPCs -------------------------------------------------------------------------

    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """A read at the store's revision (or the one asked for).

        Raises:
            RpcError: compacted or future revision.
        """
        try:
            return _range(self._store, request)
        except (Compacted, FutureRevision) as error:
            raise _rpc_error(error) from None

    def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        """Write one key.

        Raises:
            RpcError: the lease does not exist; ``ignore_value``/``ignore_lease`` on a
                missing key.
        """
        if request.lease != 0 and not self._lease_exists(request.lease):
            raise errors.lease_not_found()  # etcd checks the lease first outside a txn
        self._check_put(self._store, request)
        with self._store.write() as txn:
            return self._put(txn, request)

    def delete_range(self, request: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        """Delete the keys of a range (one revision if any existed)."""
        with self._store.write() as txn:
            return _delete_range(txn, request)

    def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Compare, then run one branch, atomically, in one revision.

        Raises:
            RpcError: a put on the path fails its checks, or a range on it asks for a
                compacted or future revision; nothing was written.
        """
        store = self._store
        path = _evaluate(store, request, first_compare_only=self.planted_first_compare_only)
        for op in _path_ops(request, path):
            if op.HasField("request_put"):
                self._check_put(store, op.request_put)
        for op in _path_ops(request, path):
            if op.HasField("request_range"):
                _check_range_revision(store, op.request_range.revision)
        with store.write() as txn:
            response = self._txn(txn, request, path)
            response.header.revision = txn.revision
        return response

    def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        """Compact the store at a revision (reclaimed later by ``compaction_step``).

        Raises:
            RpcError: the revision is compacted already, or in the future.
        """
        try:
            self._store.compact(request.revision)
        except (Compacted, FutureRevision) as error:
            raise _rpc_error(error) from None
        response = rpc_pb2.CompactionResponse()
        response.header.revision = self._store.current_revision
        return response

    # -- inside a txn ---------------------------------------------------------------------

    def _check_put(self, reader: _Reader, request: rpc_pb2.PutRequest) -> None:
        ignores = request.ignore_value or request.ignore_lease
        if ignores and not reader.range(request.key).kvs:
            raise errors.key_not_found()
        if request.lease != 0 and not self._lease_exists(request.lease):
            raise errors.lease_not_found()

    def _put(self, txn: WriteTxn, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        response = rpc_pb2.PutResponse()
        value, lease = request.value, request.lease
        previous = None
        if request.ignore_value or request.ignore_lease or request.prev_kv:
            found = txn.range(request.key).kvs
            previous = found[0] if found else None
        if previous is not None:
            if request.ignore_value:
                value = previous.value
            if request.ignore_lease:
                lease = previous.lease
            if request.prev_kv:
                response.prev_kv.CopyFrom(to_pb(previous))
        elif request.ignore_value or request.ignore_lease:
            # Checked before the txn; only a txn that deletes the key first gets here, which
            # the service refuses as a duplicate key. Write what the request holds.
            logger.warning("put with ignore_value/ignore_lease on a key deleted in its txn")
        txn.put(request.key, value, lease)
        response.header.revision = txn.revision
        return response

    def _txn(self, txn: WriteTxn, request: rpc_pb2.TxnRequest, path: _Path) -> rpc_pb2.TxnResponse:
        response = rpc_pb2.TxnResponse(succeeded=path.succeeded)
        response.header.SetInParent()
        nested = iter(path.nested)
        for op in request.success if path.succeeded else request.failure:
            result = response.responses.add()
            kind = op.WhichOneof("request")
            if kind == "request_range":
                try:
                    result.response_range.CopyFrom(_range(txn, op.request_range))
                except (Compacted, FutureRevision):
                    raise AssertionError("range revisions are checked before the txn") from None
            elif kind == "request_put":
                result.response_put.CopyFrom(self._put(txn, op.request_put))
            elif kind == "request_delete_range":
                result.response_delete_range.CopyFrom(_delete_range(txn, op.request_delete_range))
            elif kind == "request_txn":
                result.response_txn.CopyFrom(self._txn(txn, op.request_txn, next(nested)))
        return response


# -- pure helpers ---------------------------------------------------------------------------


def _range(reader: _Reader, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
    filtered = (
        request.min_mod_revision
        or request.max_mod_revision
        or request.min_create_revision
        or request.max_create_revision
    )
    limit = request.limit
    if request.sort_order != _RangeRequest.NONE or filtered:
        limit = 0  # sort or filter everything, cut after
    if limit > 0:
        limit += 1  # one more, to know whether there are more
    result = reader.range(
        request.key,
        request.range_end,
        revision=request.revision,
        limit=limit,
        count_only=request.count_only,
    )
    kvs = [kv for kv in result.kvs if _passes_filters(request, kv)]
    order = request.sort_order
    if request.sort_target != _RangeRequest.KEY and order == _RangeRequest.NONE:
        order = _RangeRequest.ASCEND
    sort_key = _SORT_KEYS.get(request.sort_target)
    if sort_key is not None and order in (_RangeRequest.ASCEND, _RangeRequest.DESCEND):
        kvs.sort(key=sort_key, reverse=order == _RangeRequest.DESCEND)
    response = rpc_pb2.RangeResponse(count=result.count)
    if request.limit > 0 and len(kvs) > request.limit:
        del kvs[request.limit :]
        response.more = True
    response.header.revision = result.revision
    response.kvs.extend(to_pb(kv, keys_only=request.keys_only) for kv in kvs)
    return response


def _passes_filters(request: rpc_pb2.RangeRequest, kv: KeyValue) -> bool:
    if request.max_mod_revision and kv.mod_revision > request.max_mod_revision:
        return False
    if request.min_mod_revision and kv.mod_revision < request.min_mod_revision:
        return False
    if request.max_create_revision and kv.create_revision > request.max_create_revision:
        return False
    return not (request.min_create_revision and kv.create_revision < request.min_create_revision)


def _delete_range(
    txn: WriteTxn, request: rpc_pb2.DeleteRangeRequest
) -> rpc_pb2.DeleteRangeResponse:
    response = rpc_pb2.DeleteRangeResponse()
    deleted = txn.delete_range(request.key, request.range_end)
    if request.prev_kv:
        response.prev_kvs.extend(to_pb(kv) for kv in deleted)
    response.deleted = len(deleted)
    response.header.revision = txn.revision
    return response


def _check_range_revision(store: MvccStore, revision: int) -> None:
    """etcd's check of a txn's range revisions, before the txn (so a negative revision below
    the compact revision is "compacted" here, though a plain range reads it as current)."""
    if revision == 0:
        return
    if revision > store.current_revision:
        raise errors.future_revision()
    if revision < store.compact_revision:
        raise errors.compacted()


def _evaluate(
    store: MvccStore, request: rpc_pb2.TxnRequest, *, first_compare_only: bool = False
) -> _Path:
    """The branches this txn and its nested txns take, all decided before any write."""
    compares = request.compare[:1] if first_compare_only else request.compare
    succeeded = all(_compare(store, compare) for compare in compares)
    branch = request.success if succeeded else request.failure
    nested = tuple(_evaluate(store, op.request_txn) for op in branch if op.HasField("request_txn"))
    return _Path(succeeded, nested)


def _path_ops(request: rpc_pb2.TxnRequest, path: _Path) -> Iterator[rpc_pb2.RequestOp]:
    """The operations the path runs, nested ones included, in order."""
    nested = iter(path.nested)
    for op in request.success if path.succeeded else request.failure:
        if op.HasField("request_txn"):
            yield from _path_ops(op.request_txn, next(nested))
        else:
            yield op


def _compare(store: MvccStore, compare: rpc_pb2.Compare) -> bool:
    kvs = store.range(compare.key, compare.range_end).kvs
    if not kvs:
        if compare.target == _Compare.VALUE:
            return False  # no value to compare, whatever the operator
        return _compare_kv(compare, KeyValue(compare.key, 0, 0, 0, b"", 0))
    return all(_compare_kv(compare, kv) for kv in kvs)


def _compare_kv(compare: rpc_pb2.Compare, kv: KeyValue) -> bool:
    given = compare.WhichOneof("target_union")
    target = compare.target
    result = 0
    if target == _Compare.VALUE:
        expected_value = compare.value if given == "value" else b""
        result = (kv.value > expected_value) - (kv.value < expected_value)
    elif target in _COMPARED_NUMBERS:
        field_name = _COMPARED_NUMBERS[target]
        actual: int = getattr(kv, field_name)
        expected: int = getattr(compare, field_name) if given == field_name else 0
        result = (actual > expected) - (actual < expected)
    match compare.result:
        case _Compare.EQUAL:
            return result == 0
        case _Compare.NOT_EQUAL:
            return result != 0
        case _Compare.GREATER:
            return result > 0
        case _Compare.LESS:
            return result < 0
        case _:
            return True
