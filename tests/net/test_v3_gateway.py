"""The JSON gateway against what etcd 3.4.23 answers (ETCD_API.md 2.4 and 9; live texts)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import etcd3gw
import pytest
import trio
from google.protobuf.message import Message

from actors.client_api import route_client_paths
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.http import HttpServer
from net.http.messages import Headers, Request, Response, StreamingResponse
from net.tcp import TcpNetwork
from net.v3.errors import RpcError, StatusCode
from net.v3.gateway import InputError, JsonGateway, decode_message, go_base64
from net.v3.methods import CallContext, Methods, SendMessage, StreamMethod, UnaryMethod
from net.v3.service import v3_methods
from tests.net.test_v3_service import OTHER, FakeV3Backend

H = '"cluster_id":"15982699985640266139","member_id":"7101852577860610209"'
CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
]
OK_HEADERS = [
    *CORS,
    ("Content-Type", "application/json"),
    ("Grpc-Metadata-Content-Type", "application/grpc"),
]


def header(revision: int | None) -> str:
    rev = f',"revision":"{revision}"' if revision is not None else ""
    return f'{{{H}{rev},"raft_term":"3"}}'


@asynccontextmanager
async def gateway_for(methods: Methods) -> AsyncIterator[JsonGateway]:
    async with trio.open_nursery() as nursery:
        yield JsonGateway(methods, nursery)
        nursery.cancel_scope.cancel()


def post(path: str, body: str | bytes = b"", method: str = "POST", **headers: str) -> Request:
    data = body.encode() if isinstance(body, str) else body
    pairs = [(name.replace("_", "-"), value) for name, value in headers.items()]
    return Request(method, path, path, "", Headers(pairs), data)


async def body_of(response: Response | StreamingResponse) -> bytes:
    if isinstance(response, Response):
        return response.body
    return b"".join([chunk async for chunk in response.chunks])


async def chunks_of(response: Response | StreamingResponse) -> list[bytes]:
    assert isinstance(response, StreamingResponse)
    return [chunk async for chunk in response.chunks]


@pytest.fixture
def backend() -> FakeV3Backend:
    return FakeV3Backend()


async def exchange(backend: FakeV3Backend, path: str, body: str) -> tuple[int, str]:
    async with gateway_for(v3_methods(backend)) as gateway:
        response = await gateway(post(path, body))
        return response.status, (await body_of(response)).decode()


async def test_kv_exchanges_match_etcd(backend: FakeV3Backend) -> None:
    async with gateway_for(v3_methods(backend)) as gateway:

        async def call(path: str, body: str) -> str:
            response = await gateway(post(path, body))
            assert isinstance(response, Response)
            assert (response.status, list(response.headers)) == (200, OK_HEADERS)
            return response.body.decode()

        assert await call("/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}') == (
            f'{{"header":{header(2)}}}'
        )
        assert await call("/v3beta/kv/put", '{"key":"Zm9v","value":"YmFyMg==","prev_kv":true}') == (
            f'{{"header":{header(3)},"prev_kv":{{"key":"Zm9v","create_revision":"2",'
            '"mod_revision":"2","version":"1","value":"YmFy"}}'
        )
        assert await call("/v3/kv/range", '{"key":"Zm9v"}') == (
            f'{{"header":{header(3)},"kvs":[{{"key":"Zm9v","create_revision":"2",'
            '"mod_revision":"3","version":"2","value":"YmFyMg=="}],"count":"1"}'
        )
        assert await call("/v3/kv/range", '{"key":"bm90aGVyZQ=="}') == f'{{"header":{header(3)}}}'
        for key in ("YS8x", "YS8y", "YS8z"):
            await call("/v3/kv/put", f'{{"key":"{key}","value":"eA=="}}')
        limited = json.loads(
            await call(
                "/v3/kv/range",
                '{"key":"YS8=","range_end":"YTA=","limit":2,"sort_order":"DESCEND",'
                '"sort_target":"KEY","keys_only":true}',
            )
        )
        assert (limited["more"], limited["count"], len(limited["kvs"])) == (True, "3", 2)
        assert "value" not in limited["kvs"][0]
        assert await call("/v3/kv/deleterange", '{"key":"bm9uZQ=="}') == (
            f'{{"header":{header(6)}}}'
        )
        deleted = json.loads(await call("/v3/kv/deleterange", '{"key":"YS8x","prev_kv":true}'))
        assert (deleted["deleted"], deleted["prev_kvs"][0]["key"]) == ("1", "YS8x")
        assert await call("/v3/kv/compaction", '{"revision":"5","physical":true}') == (
            f'{{"header":{header(7)}}}'
        )


async def test_txn_json_matches_etcd(backend: FakeV3Backend) -> None:
    await exchange(backend, "/v3/kv/put", '{"key":"Zm9v","value":"YmFyMg=="}')
    status, body = await exchange(
        backend,
        "/v3/kv/txn",
        '{"compare":[{"target":"VALUE","key":"Zm9v","result":"EQUAL","value":"YmFyMg=="}],'
        '"success":[{"request_put":{"key":"Zm9v","value":"YmFyMw=="}},{"request_txn":{}}]}',
    )
    assert (status, body) == (
        200,
        f'{{"header":{header(3)},"succeeded":true,"responses":['
        '{"response_put":{"header":{"revision":"3"}}},{"response_txn":{"header":{},"succeeded":true}}]}',
    )
    # a failed compare: no "succeeded" key at all; etcd3gw sends numbers for create_revision
    status, body = await exchange(
        backend,
        "/v3/kv/txn",
        '{"compare":[{"target":"CREATE","key":"Zm9v","result":"EQUAL","create_revision":0}],'
        '"failure":[{"request_range":{"key":"Zm9v"}}]}',
    )
    assert status == 200
    assert body.startswith(f'{{"header":{header(3)},"responses":[{{"response_range":')


async def test_cluster_and_maintenance(backend: FakeV3Backend) -> None:
    status, body = await exchange(backend, "/v3/cluster/member/list", "{}")
    assert (status, body) == (
        200,
        f'{{"header":{header(None)},"members":[{{"ID":"{OTHER.id}",'
        '"peerURLs":["http://127.0.0.1:23802"],"isLearner":true},'
        '{"ID":"7101852577860610209","name":"n1","peerURLs":["http://127.0.0.1:23800"],'
        '"clientURLs":["http://127.0.0.1:23790"]}]}',
    )
    status, body = await exchange(backend, "/v3/maintenance/status", "")
    assert (status, body) == (
        200,
        f'{{"header":{header(1)},"version":"3.4.23","dbSize":"20480",'
        '"leader":"7101852577860610209","raftIndex":"1190","raftTerm":"3",'
        '"raftAppliedIndex":"1189","dbSizeInUse":"16384"}',
    )


async def test_service_errors_are_chunked_with_a_trailer(backend: FakeV3Backend) -> None:
    async with gateway_for(v3_methods(backend)) as gateway:
        response = await gateway(post("/v3/kv/put", ""))
        assert isinstance(response, StreamingResponse)
        assert (response.status, list(response.headers)) == (
            400,
            [*CORS, ("Content-Type", "application/json"), ("Trailer", "Grpc-Trailer-Content-Type")],
        )
        assert await chunks_of(response) == [
            b'{"error":"etcdserver: key is not provided",'
            b'"message":"etcdserver: key is not provided","code":3}'
        ]
        response = await gateway(post("/v3/kv/range", '{"key":"Zm9v","revision":1000}'))
        assert response.status == 400
        assert json.loads(await body_of(response))["code"] == 11
        backend.learner = True
        response = await gateway(post("/v3/kv/put", '{"key":"Zm9v"}'))
        assert response.status == 503
        assert json.loads(await body_of(response)) == {
            "error": "etcdserver: rpc not supported for learner",
            "message": "etcdserver: rpc not supported for learner",
            "code": 14,
        }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"key":"Zm9v","limit":"abc"}', "invalid character 'a' looking for beginning of value"),
        ('{"key":"Zm9v!"}', "illegal base64 data at input byte 4"),
        ('{"key":"Zm9"}', "illegal base64 data at input byte 0"),
        ('{"key":"YQ="}', "illegal base64 data at input byte 3"),
        ('{"key":"YQ==="}', "illegal base64 data at input byte 4"),
        (
            '{"key":"Zm9v","sort_order":"FOO"}',
            'unknown value "FOO" for enum etcdserverpb.RangeRequest_SortOrder',
        ),
        (
            '{"key":"YQ==","sort_order":"\\u0041SCEND"}',
            'unknown value "\\\\u0041SCEND" for enum etcdserverpb.RangeRequest_SortOrder',
        ),
        (
            '{"key":"Zm9v","sort_order":1.0}',
            "json: cannot unmarshal number 1.0 into Go value of type "
            "etcdserverpb.RangeRequest_SortOrder",
        ),
        ('{"key":"Zm9v" ', "unexpected EOF"),
        ("[1]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
        (
            '{"key":"Zm9v","limit":1.5}',
            "json: cannot unmarshal number 1.5 into Go value of type int64",
        ),
        (
            '{"key":"Zm9v","limit":99999999999999999999}',
            "json: cannot unmarshal number 99999999999999999999 into Go value of type int64",
        ),
        ('{"key":"YQ==","limit":""}', "unexpected end of JSON input"),
        ('{"key":"YQ==","limit":"1 2"}', "invalid character '2' after top-level value"),
        (
            '{"key":"YQ==","limit":"true"}',
            "json: cannot unmarshal bool into Go value of type int64",
        ),
        (
            '{"key":"Zm9v","serializable":"true"}',
            "json: cannot unmarshal string into Go value of type bool",
        ),
        (
            '{"key":"Zm9v","keys_only":1}',
            "json: cannot unmarshal number into Go value of type bool",
        ),
        ('{"key":1}', "json: cannot unmarshal number into Go value of type []uint8"),
        ('{"a":1 x}', "invalid character 'x' after object key:value pair"),
        ('{"a" x}', "invalid character 'x' after object key"),
        ("{x}", "invalid character 'x' looking for beginning of object key string"),
        ("[1 x]", "invalid character 'x' after array element"),
        (
            '{"success":{}}',
            "json: cannot unmarshal object into Go value of type []json.RawMessage",
        ),
    ],
)
async def test_unreadable_input_is_refused_with_gos_text(
    backend: FakeV3Backend, body: str, message: str
) -> None:
    path = "/v3/kv/txn" if "success" in body else "/v3/kv/range"
    async with gateway_for(v3_methods(backend)) as gateway:
        response = await gateway(post(path, body))
    assert isinstance(response, Response)  # sent with a Content-Length, no trailer
    assert (response.status, list(response.headers)) == (
        400,
        [*CORS, ("Content-Type", "application/json")],
    )
    assert json.loads(response.body) == {"error": message, "message": message, "code": 3}
    assert backend.requests == []


@pytest.mark.parametrize(
    "body",
    [
        '{"key":"Zm9v","limit":"1","sort_order":7,"zzz":{"a":[1]}}',
        '{"key":"Zm9v","limit":" 1","keys_only":null,"serializable":true}',
        '{"key":"Zm9v"} {"key":"YQ=="}',
        '{"key":"Zm9v"} not json',
        '{"key":"Zm9v\\n","rangeEnd":"","sortOrder":"NONE","sort_order":"FOO"}',
        '{"key":"Zm9v","sort_order":-1,"max_mod_revision":"9223372036854775807"}',
    ],
)
async def test_lenient_input_accepted_like_etcd(backend: FakeV3Backend, body: str) -> None:
    status, _ = await exchange(backend, "/v3/kv/range", body)
    assert status == 200
    (request,) = backend.requests
    assert isinstance(request, rpc_pb2.RangeRequest)
    assert request.key == b"foo"


async def test_int64_input_is_exact(backend: FakeV3Backend) -> None:
    lease = 7539485351332125422  # above 2**53: must not go through a float
    await exchange(backend, "/v3/kv/put", f'{{"key":"YQ==","lease":{lease}}}')
    await exchange(backend, "/v3/kv/put", f'{{"key":"Yg==","lease":"{lease}"}}')
    puts = [r for r in backend.requests if isinstance(r, rpc_pb2.PutRequest)]
    assert [put.lease for put in puts] == [lease, lease]


async def test_paths_methods_and_aliases(backend: FakeV3Backend) -> None:
    async with gateway_for(v3_methods(backend)) as gateway:
        for method in ("GET", "PUT", "HEAD"):
            response = await gateway(post("/v3/kv/range", method=method))
            assert isinstance(response, Response)
            assert (response.status, response.body) == (405, b"Method Not Allowed\n")
            assert ("Content-Type", "text/plain; charset=utf-8") in response.headers
        overridden = await gateway(post("/v3/kv/range", "{}", X_HTTP_Method_Override="GET"))
        assert overridden.status == 405
        for path in ("/v3/kv/nope", "/v3/kv/range/", "/v3/watch", "/v3/maintenance/hashkv"):
            response = await gateway(post(path, "{}"))
            assert isinstance(response, Response)
            assert (response.status, response.body) == (404, b"Not Found\n")
        options = await gateway(post("/v3/kv/range", method="OPTIONS"))
        assert (options.status, list(options.headers)) == (200, CORS)
        assert (await gateway(post("/v3beta/kv/range", '{"key":"YQ=="}'))).status == 200


async def test_the_client_port_routes_v3_to_the_gateway_and_the_rest_elsewhere(
    backend: FakeV3Backend,
) -> None:
    async def v2(request: Request) -> Response:
        return Response(404, (), b"404 page not found\n")

    async def troika_paths(request: Request) -> Response:
        return Response(200, (), b"troika " + request.path.encode())

    async with gateway_for(v3_methods(backend)) as gateway:
        handler = route_client_paths(gateway, troika_paths, v2)
        assert (await handler(post("/v3/kv/range", '{"key":"YQ=="}'))).status == 200
        assert (await handler(post("/v3beta/kv/range", '{"key":"YQ=="}'))).status == 200
        for path in ("/v3alpha/kv/range", "/v2/keys/a", "/v3", "/troika/v2/x"):
            response = await handler(post(path, "{}"))
            assert await body_of(response) == b"404 page not found\n"
        response = await handler(post("/troika/v1/hot", "{}"))
        assert await body_of(response) == b"troika /troika/v1/hot"


async def test_metadata_and_unauthenticated() -> None:
    seen: list[CallContext] = []

    async def authenticate(request: Message, context: CallContext) -> Message:
        seen.append(context)
        raise RpcError(StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")

    methods = {grpc_path("KV", "Range"): UnaryMethod(rpc_pb2.RangeRequest, authenticate)}
    async with gateway_for(methods) as gateway:
        response = await gateway(
            post(
                "/v3/kv/range",
                "{}",
                Authorization="DKWJQsIknWeFSLoN.1218",
                Grpc_Metadata_Hasleader="true",
                X_Other="dropped",
            )
        )
    assert response.status == 401
    assert ("WWW-Authenticate", "etcdserver: invalid auth token") in response.headers
    (context,) = seen
    assert context.metadata == (
        ("authorization", "DKWJQsIknWeFSLoN.1218"),
        ("grpcgateway-authorization", "DKWJQsIknWeFSLoN.1218"),
        ("hasleader", "true"),
    )


# -- streams ------------------------------------------------------------------------------------

WATCH = grpc_path("Watch", "Watch")
SNAPSHOT = grpc_path("Maintenance", "Snapshot")


async def echo_watch(
    requests: AsyncIterator[Message], send: SendMessage, context: CallContext
) -> None:
    """A toy Watch: one created response per request; watch_id 13 fails the stream."""
    async for request in requests:
        assert isinstance(request, rpc_pb2.WatchRequest)
        watch_id = request.create_request.watch_id
        if watch_id == 13:
            raise RpcError(StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")
        response = rpc_pb2.WatchResponse(watch_id=watch_id, created=True)
        response.header.revision = 5
        await send(response)


async def snapshot(
    requests: AsyncIterator[Message], send: SendMessage, context: CallContext
) -> None:
    """A toy Snapshot: two blobs, the second mid-stream failing when asked to."""
    async for _request in requests:
        await send(rpc_pb2.SnapshotResponse(remaining_bytes=3, blob=b"abc"))
    await send(rpc_pb2.SnapshotResponse(blob=b"z"))


STREAMS: Methods = {
    WATCH: StreamMethod(rpc_pb2.WatchRequest, echo_watch),
    SNAPSHOT: StreamMethod(rpc_pb2.SnapshotRequest, snapshot),
}


def created(watch_id: int) -> bytes:
    wid = f',"watch_id":"{watch_id}"' if watch_id else ""
    return f'{{"result":{{"header":{{"revision":"5"}}{wid},"created":true}}}}\n'.encode()


async def test_stream_of_concatenated_requests_one_chunk_each() -> None:
    body = (
        '{"create_request":{"key":"YQ==","watch_id":"7"}}\n'
        '{"create_request":{"key":"YQ==","watch_id":8}} {"progress_request":{}}'
        ' {"create_request":{"watch_id":"bad"}} {"create_request":{"watch_id":9}}'
    )
    async with gateway_for(STREAMS) as gateway:
        response = await gateway(post("/v3/watch", body))
        assert isinstance(response, StreamingResponse)
        assert (response.status, list(response.headers)) == (200, OK_HEADERS)
        # the unreadable fourth object ends the requests; the stream ends with them here
        assert await chunks_of(response) == [created(7), created(8), created(0)]


async def test_stream_error_mid_stream_and_before_the_first_message() -> None:
    async with gateway_for(STREAMS) as gateway:
        response = await gateway(
            post(
                "/v3/watch", '{"create_request":{"watch_id":1}} {"create_request":{"watch_id":13}}'
            )
        )
        assert response.status == 200
        assert await chunks_of(response) == [
            created(1),
            b'{"error":{"grpc_code":9,"http_code":412,"message":"etcdserver: not leader",'
            b'"http_status":"Precondition Failed"}}',
        ]
        first = await gateway(post("/v3/watch", '{"create_request":{"watch_id":13}}'))
        assert first.status == 412
        assert json.loads(await body_of(first))["error"]["grpc_code"] == 9


async def test_stream_first_request_unreadable() -> None:
    async with gateway_for(STREAMS) as gateway:
        # a bidirectional stream: grpc-gateway returns the decoder's error unwrapped (code 2)
        bidi = await gateway(post("/v3/watch", '{"create_request":{"key":"Zm9v"}'))
        assert isinstance(bidi, Response)
        assert (bidi.status, json.loads(bidi.body)) == (
            500,
            {"error": "unexpected EOF", "message": "unexpected EOF", "code": 2},
        )
        # a server stream reads its one request like a unary call
        server = await gateway(post("/v3/maintenance/snapshot", "xx"))
        assert isinstance(server, Response)
        assert server.status == 400
        assert json.loads(server.body)["code"] == 3
        empty = await gateway(post("/v3/maintenance/snapshot", ""))
        assert await chunks_of(empty) == [
            b'{"result":{"remaining_bytes":"3","blob":"YWJj"}}\n',
            b'{"result":{"blob":"eg=="}}\n',
        ]


async def test_stream_handler_is_cancelled_when_the_client_leaves() -> None:
    finished = trio.Event()
    cancelled: list[bool] = []

    async def forever(
        requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        try:
            await send(rpc_pb2.WatchResponse(created=True))
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise
        finally:
            finished.set()

    async with gateway_for({WATCH: StreamMethod(rpc_pb2.WatchRequest, forever)}) as gateway:
        response = await gateway(post("/v3/watch", "{}"))
        assert isinstance(response, StreamingResponse)
        chunks = response.chunks
        assert await chunks.__anext__() == b'{"result":{"created":true}}\n'
        assert response.on_close is not None
        await response.on_close()
        with trio.fail_after(1):
            await finished.wait()
    assert cancelled == [True]


# -- helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data"),
    [("", b""), ("Zm9v", b"foo"), ("Zm8=", b"fo"), ("Zg==", b"f"), ("Zm9v\nYmFy\r\n", b"foobar")],
)
def test_go_base64_decodes(text: str, data: bytes) -> None:
    assert go_base64(text) == data


@pytest.mark.parametrize(
    ("text", "offset"),
    [("YQ==YQ==", 4), ("Zm9v\u00e9", 4), ("Y", 0), ("YQ=\n", 4), ("Y\nQ=x", 3), ("=", 0)],
)
def test_go_base64_error_offsets(text: str, offset: int) -> None:
    with pytest.raises(InputError, match=f"^illegal base64 data at input byte {offset}$"):
        go_base64(text)


# -- etcd3gw over TCP ---------------------------------------------------------------------------


def _etcd3gw_session(port: int) -> Iterator[object]:
    client = etcd3gw.client(host="127.0.0.1", port=port)
    assert client.put("foo", "bar") is True
    yield client.get("foo")
    yield client.create("foo", "other")  # exists: the txn's compare fails
    yield client.create("new", "1")
    yield client.replace("foo", "bar", "baz")
    yield client.get("foo")
    yield client.delete("foo")
    yield client.delete("foo")
    txn = {
        "compare": [{"key": "bmV3", "result": "EQUAL", "target": "VALUE", "value": "MQ=="}],
        "success": [{"request_put": {"key": "bmV3", "value": "Mg=="}}],
        "failure": [],
    }
    yield client.transaction(txn)["succeeded"]
    yield client.get("new")
    yield [member.get("name", "") for member in client.members()]
    yield client.status()["version"]


async def test_etcd3gw_against_the_gateway_on_tcp(backend: FakeV3Backend) -> None:
    async def version(request: Request) -> Response:
        if request.path == "/version":
            return Response(
                200,
                (("Content-Type", "application/json"),),
                b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}',
            )
        return Response(404, (), b"404 page not found\n")

    async with trio.open_nursery() as nursery:
        gateway = JsonGateway(v3_methods(backend), nursery)
        server = HttpServer(TcpNetwork(), route_client_paths(gateway, version, version))
        address = await nursery.start(server.serve, "127.0.0.1:0")
        port = int(str(address).rsplit(":", 1)[1])
        results = await trio.to_thread.run_sync(lambda: list(_etcd3gw_session(port)))
        nursery.cancel_scope.cancel()
    assert results == [
        [b"bar"],
        False,
        True,
        True,
        [b"baz"],
        True,
        False,
        True,
        [b"2"],
        ["", "n1"],
        "3.4.23",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"key":[97,98,99]}', None),
        (b'{"key":[97,300]}', "json: cannot unmarshal number 300 into Go value of type uint8"),
        (b'{"key":["YQ=="]}', "json: cannot unmarshal string into Go value of type uint8"),
    ],
)
def test_bytes_fields_take_arrays_of_numbers_as_go_does(raw: bytes, expected: str | None) -> None:
    if expected is None:
        assert decode_message(rpc_pb2.RangeRequest, raw) == rpc_pb2.RangeRequest(key=b"abc")
    else:
        with pytest.raises(InputError, match=expected):
            decode_message(rpc_pb2.RangeRequest, raw)


async def test_a_message_over_grpcs_limit_is_refused_as_etcds_grpc_server_does(
    backend: FakeV3Backend,
) -> None:
    value = base64.b64encode(b"x" * (2560 * 1024)).decode()
    # the protobuf: key "k" (3 bytes) + value tag, 4-byte length and 2,621,440 bytes
    status, text = await exchange(backend, "/v3/kv/put", f'{{"key":"aw==","value":"{value}"}}')
    assert status == 429
    assert json.loads(text) == {
        "error": "grpc: received message larger than max (2621448 vs. 2097152)",
        "message": "grpc: received message larger than max (2621448 vs. 2097152)",
        "code": 8,
    }
    assert backend.requests == []


def test_a_request_op_naming_two_requests_keeps_the_later_one_in_proto_order() -> None:
    """etcd's gateway picks one of the two at random (Go map order); troika always the same."""
    raw = b'{"success":[{"request_range":{"key":"YQ=="},"request_put":{"key":"YQ=="}}]}'
    request = decode_message(rpc_pb2.TxnRequest, raw)
    assert isinstance(request, rpc_pb2.TxnRequest)
    assert [op.WhichOneof("request") for op in request.success] == ["request_put"]
