"""The Cluster and Maintenance services over fakes: etcd's checks, errors and answer shapes
(through the JSON gateway, as etcd 3.4's gateway shows them), the snapshot stream's pieces."""

from __future__ import annotations

import hashlib
import json

import pytest

from net.backend import MemberInfo, MemberNotFound, PeerUrlExists
from net.etcdpb import rpc_pb2
from net.v3.cluster_service import (
    check_add,
    check_peer_urls,
    cluster_methods,
    learner_ready,
    member_exists,
    peer_url_exists,
    too_many_learners,
)
from net.v3.errors import RpcError
from net.v3.maintenance_service import SNAPSHOT_BLOB_BYTES, maintenance_methods, snapshot_messages
from net.v3.service import V3Service
from tests.net.test_v3_gateway import body_of, chunks_of, gateway_for, post
from tests.net.test_v3_service import FakeV3Backend

VOTER = MemberInfo(1, "n1", ("http://127.0.0.1:2380",), ("http://127.0.0.1:2379",))
LEARNER = MemberInfo(2, "", ("http://127.0.0.1:2390",), (), is_learner=True)


class FakeCluster:
    """Members in a list; changes recorded."""

    def __init__(self) -> None:
        self.table = [VOTER]

    def members(self) -> list[MemberInfo]:
        return list(self.table)

    async def add_member(self, peer_urls: tuple[str, ...], is_learner: bool) -> MemberInfo:
        if any(set(peer_urls) & set(m.peer_urls) for m in self.table):
            raise PeerUrlExists()
        added = MemberInfo(3, "", peer_urls, (), is_learner)
        self.table.append(added)
        return added

    async def remove_member(self, member_id: int) -> None:
        if all(m.id != member_id for m in self.table):
            raise MemberNotFound()
        self.table = [m for m in self.table if m.id != member_id]

    async def update_member(self, member_id: int, peer_urls: tuple[str, ...]) -> None:
        raise MemberNotFound()

    async def promote_member(self, member_id: int) -> None:
        raise MemberNotFound()


class FakeMaintenance:
    def __init__(self) -> None:
        self.body = b"x" * (SNAPSHOT_BLOB_BYTES + 10)

    def hash(self) -> tuple[int, int]:
        return 1234, 7

    def alarms(self) -> list[tuple[int, int]]:
        return [(5, rpc_pb2.NOSPACE)]

    async def defragment(self) -> None:
        pass

    async def alarm(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        if request.action == rpc_pb2.AlarmRequest.GET:
            return rpc_pb2.AlarmResponse()
        return rpc_pb2.AlarmResponse(
            alarms=[rpc_pb2.AlarmMember(memberID=request.memberID, alarm=request.alarm)]
        )

    async def move_leader(self, target_id: int) -> None:
        pass

    async def snapshot(self) -> bytes:
        return self.body


def methods() -> dict[str, object]:
    backend = FakeV3Backend()
    service = V3Service(backend)
    return {
        **cluster_methods(FakeCluster(), service),
        **maintenance_methods(FakeMaintenance(), service),
    }


async def call(path: str, body: str) -> tuple[int, object]:
    async with gateway_for(methods()) as gateway:  # type: ignore[arg-type]
        response = await gateway(post(path, body))
        return response.status, json.loads(await body_of(response))


@pytest.mark.parametrize(
    "urls",
    [[], ["127.0.0.1:2380"], ["ftp://h:1"], ["http://h"], ["http://h:1/path"], ["http://h:x"]],
)
def test_bad_peer_urls_are_refused(urls: list[str]) -> None:
    with pytest.raises(RpcError, match="given member URLs are invalid"):
        check_peer_urls(urls)


def test_add_checks_in_etcds_order() -> None:
    members = [VOTER, LEARNER]
    with pytest.raises(RpcError) as same_id:
        check_add(members, 2, ["http://127.0.0.1:2390"], is_learner=True)
    assert same_id.value == member_exists()
    with pytest.raises(RpcError) as same_url:
        check_add(members, 9, ["http://127.0.0.1:2390"], is_learner=True)
    assert same_url.value == peer_url_exists()
    with pytest.raises(RpcError) as learners:
        check_add(members, 9, ["http://127.0.0.1:2391"], is_learner=True)
    assert learners.value == too_many_learners()
    check_add(members, 9, ["http://127.0.0.1:2391"], is_learner=False)


def test_learner_ready_is_within_nine_tenths_of_the_leader() -> None:
    assert learner_ready(90, 100)
    assert not learner_ready(89, 100)
    assert learner_ready(0, 0)


async def test_member_add_and_remove_through_the_gateway() -> None:
    status, added = await call(
        "/v3/cluster/member/add", '{"peerURLs":["http://127.0.0.1:2392"],"isLearner":true}'
    )
    assert status == 200
    assert isinstance(added, dict)
    assert added["member"] == {"ID": "3", "peerURLs": ["http://127.0.0.1:2392"], "isLearner": True}
    assert "revision" not in added["header"]
    assert [m["ID"] for m in added["members"]] == ["1", "3"]
    status, refused = await call("/v3/cluster/member/remove", '{"ID":"99"}')
    assert (status, refused) == (
        404,
        {
            "error": "etcdserver: member not found",
            "message": "etcdserver: member not found",
            "code": 5,
        },
    )
    status, duplicate = await call(
        "/v3/cluster/member/add", '{"peerURLs":["http://127.0.0.1:2380"]}'
    )
    assert status == 412
    assert isinstance(duplicate, dict)
    assert duplicate["message"] == "etcdserver: Peer URLs already exists"


async def test_maintenance_answers_have_etcds_shapes() -> None:
    assert await call("/v3/maintenance/alarm", '{"action":"GET"}') == (200, {})
    status, alarms = await call(
        "/v3/maintenance/alarm", '{"action":"ACTIVATE","memberID":"5","alarm":"NOSPACE"}'
    )
    assert (status, alarms) == (200, {"alarms": [{"memberID": "5", "alarm": "NOSPACE"}]})
    assert await call("/v3/maintenance/defragment", "{}") == (200, {})
    assert await call("/v3/maintenance/transfer-leadership", '{"targetID":"2"}') == (200, {})
    status, listed = await call("/v3/maintenance/status", "{}")
    assert isinstance(listed, dict)
    assert listed["errors"] == ["memberID:5 alarm:NOSPACE "]  # as etcd 3.4 lists it, live
    status, hashed = await call("/v3/maintenance/hash", "{}")
    assert isinstance(hashed, dict)
    assert hashed["hash"] == 1234
    assert hashed["header"]["revision"] == "7"


async def test_snapshot_stream_ends_with_the_sha256() -> None:
    body = FakeMaintenance().body
    async with gateway_for(methods()) as gateway:  # type: ignore[arg-type]
        chunks = await chunks_of(await gateway(post("/v3/maintenance/snapshot", "{}")))
    results = [json.loads(chunk)["result"] for chunk in chunks]
    assert [r.get("remaining_bytes") for r in results] == ["10", None, None]
    messages = snapshot_messages(body)
    assert b"".join(m.blob for m in messages[:-1]) == body
    assert messages[-1].blob == hashlib.sha256(body).digest()
    assert [len(m.blob) for m in messages] == [SNAPSHOT_BLOB_BYTES, 10, 32]


def test_more_learners_only_when_the_member_allows_them() -> None:
    """``--troika-max-learners``: a second learner is refused with etcd's error by default
    (etcd 3.4's maxLearners is 1) and taken when the limit is 2; a third is refused then."""
    members = [VOTER, LEARNER]
    second = ["http://127.0.0.1:2391"]
    check_add(members, 9, second, is_learner=True, learners_max=2)
    with pytest.raises(RpcError) as refused:
        check_add(members, 9, second, is_learner=True)
    assert refused.value == too_many_learners()
    third = MemberInfo(9, "", tuple(second), (), is_learner=True)
    with pytest.raises(RpcError):
        check_add([*members, third], 10, ["http://127.0.0.1:2392"], True, learners_max=2)
