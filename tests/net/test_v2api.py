"""The v2 API over HTTP against the real V2Store (a fake member around it).

The exchanges of ETCD_API.md section 1.4 are replayed request by request; where the reference
shows the bytes, the bytes must match (its session had one more write, at index 9, which the
fake makes as a hidden key).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import trio

from net.backend import BackendTimeout, NoLeader
from net.http import ClientResponse, Headers, HttpClient, Request
from net.v2api import V2Api, parse_key_request, parse_peer_urls
from storage.v2store.model import V2Error, V2Request
from tests.net.http_helpers import serving
from tests.net.v2_fake import FakeBackend

CLUSTER = "ddcdf4f4fbba999b"
FORM = (("Content-Type", "application/x-www-form-urlencoded"),)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}


@dataclass
class Stack:
    backend: FakeBackend
    client: HttpClient

    async def call(
        self, method: str, path: str, form: str = "", *, headers: tuple[tuple[str, str], ...] = FORM
    ) -> ClientResponse:
        """Like ``curl -X method path -d form``: the form goes in the body as it is."""
        body = form.encode()
        return await self.client.request(method, path, headers=headers if body else (), body=body)


@asynccontextmanager
async def v2_stack() -> AsyncIterator[Stack]:
    backend = FakeBackend()
    async with serving(V2Api(backend)) as served:
        client = HttpClient(served.network, f"http://{served.address}")
        yield Stack(backend, client)
        await client.aclose()


def expect(
    reply: ClientResponse,
    status: int,
    body: str | None = None,
    *,
    etcd_index: int | None = None,
    raft: tuple[int, int] | None = None,
) -> None:
    """Status, body (given without its trailing newline) and the etcd headers of a keys reply."""
    assert reply.status == status, reply.body
    if body is not None:
        assert reply.body.decode() == body + "\n"
    assert reply.headers.get("Content-Type") == "application/json"
    assert reply.headers.get("X-Etcd-Cluster-Id") == CLUSTER
    if etcd_index is not None:
        assert reply.headers.get("X-Etcd-Index") == str(etcd_index)
    if status >= 400:  # errors carry no Raft headers
        assert "X-Raft-Index" not in reply.headers
        assert "X-Raft-Term" not in reply.headers
    elif raft is not None:
        assert reply.headers.get("X-Raft-Index") == str(raft[0])
        assert reply.headers.get("X-Raft-Term") == str(raft[1])
    for name, value in CORS.items():
        assert reply.headers.get(name) == value


async def test_the_reference_exchanges_of_section_1_4() -> None:
    async with v2_stack() as s:
        reply = await s.call("PUT", "/v2/keys/message", "value=Hello world")
        expect(
            reply,
            201,
            '{"action":"set","node":{"key":"/message","value":"Hello world",'
            '"modifiedIndex":4,"createdIndex":4}}',
            etcd_index=4,
            raft=(6, 2),
        )
        reply = await s.call("PUT", "/v2/keys/message", "value=Hello etcd")
        expect(
            reply,
            200,
            '{"action":"set","node":{"key":"/message","value":"Hello etcd","modifiedIndex":5,'
            '"createdIndex":5},"prevNode":{"key":"/message","value":"Hello world",'
            '"modifiedIndex":4,"createdIndex":4}}',
            etcd_index=5,
            raft=(7, 2),
        )
        reply = await s.call("GET", "/v2/keys/missing")
        expect(
            reply,
            404,
            '{"errorCode":100,"message":"Key not found","cause":"/missing","index":5}',
            etcd_index=5,
        )
        reply = await s.call("PUT", "/v2/keys/foo?ttl=20", "value=bar")
        expect(
            reply,
            201,
            '{"action":"set","node":{"key":"/foo","value":"bar",'
            '"expiration":"2026-11-20T22:55:16.459540957Z","ttl":20,'
            '"modifiedIndex":6,"createdIndex":6}}',
            etcd_index=6,
            raft=(8, 2),
        )
        s.backend.advance(0.006496474)  # the refresh came 6.5 ms later
        reply = await s.call("PUT", "/v2/keys/foo", "ttl=30&refresh=true&prevExist=true")
        expect(
            reply,
            200,
            '{"action":"update","node":{"key":"/foo","value":"bar",'
            '"expiration":"2026-11-20T22:55:26.466037431Z","ttl":30,"modifiedIndex":7,'
            '"createdIndex":6},"prevNode":{"key":"/foo","value":"bar",'
            '"expiration":"2026-11-20T22:55:16.459540957Z","ttl":20,"modifiedIndex":6,'
            '"createdIndex":6}}',
            etcd_index=7,
        )
        reply = await s.call("PUT", "/v2/keys/foo", "ttl=&value=bar")
        expect(
            reply,
            200,
            '{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":8,'
            '"createdIndex":8},"prevNode":{"key":"/foo","value":"bar",'
            '"expiration":"2026-11-20T22:55:26.466037431Z","ttl":30,"modifiedIndex":7,'
            '"createdIndex":6}}',
            etcd_index=8,
        )
        await s.call("PUT", "/v2/keys/_elsewhere", "value=the write at 9")
        reply = await s.call("PUT", "/v2/keys/foo?prevExist=false", "value=three")
        expect(
            reply,
            412,
            '{"errorCode":105,"message":"Key already exists","cause":"/foo","index":9}',
            etcd_index=9,
        )
        reply = await s.call("PUT", "/v2/keys/foo?prevValue=two", "value=three")
        expect(
            reply,
            412,
            '{"errorCode":101,"message":"Compare failed","cause":"[two != bar]","index":9}',
        )
        reply = await s.call("PUT", "/v2/keys/foo?prevValue=bar", "value=three")
        expect(
            reply,
            200,
            '{"action":"compareAndSwap","node":{"key":"/foo","value":"three",'
            '"modifiedIndex":10,"createdIndex":8},"prevNode":{"key":"/foo","value":"bar",'
            '"modifiedIndex":8,"createdIndex":8}}',
        )
        reply = await s.call("PUT", "/v2/keys/foo?prevIndex=1", "value=x")
        expect(
            reply,
            412,
            '{"errorCode":101,"message":"Compare failed","cause":"[1 != 10]","index":10}',
        )
        reply = await s.call("PUT", "/v2/keys/newkey?prevExist=true", "value=x")
        expect(reply, 404)
        assert reply.json()["errorCode"] == 100
        reply = await s.call("DELETE", "/v2/keys/foo?prevIndex=10")
        expect(
            reply,
            200,
            '{"action":"compareAndDelete","node":{"key":"/foo","modifiedIndex":11,'
            '"createdIndex":8},"prevNode":{"key":"/foo","value":"three",'
            '"modifiedIndex":10,"createdIndex":8}}',
        )
        reply = await s.call("PUT", "/v2/keys/dir?dir=true")
        expect(
            reply,
            201,
            '{"action":"set","node":{"key":"/dir","dir":true,"modifiedIndex":12,'
            '"createdIndex":12}}',
        )
        reply = await s.call("PUT", "/v2/keys/dir?dir=true&ttl=30")
        expect(
            reply,
            403,
            '{"errorCode":102,"message":"Not a file","cause":"/dir","index":12}',
        )
        reply = await s.call("PUT", "/v2/keys/dir?dir=true&ttl=30&prevExist=true")
        expect(reply, 200)
        update = reply.json()
        assert update["action"] == "update"
        assert update["node"]["ttl"] == 30 and "expiration" in update["node"]


async def test_directories_files_and_the_root() -> None:
    async with v2_stack() as s:
        await s.call("PUT", "/v2/keys/dir/a", "value=1")
        reply = await s.call("DELETE", "/v2/keys/dir")
        expect(reply, 403)
        assert reply.json()["errorCode"] == 102
        reply = await s.call("DELETE", "/v2/keys/dir?dir=true")
        expect(reply, 403)
        assert reply.json()["message"] == "Directory not empty"
        reply = await s.call("DELETE", "/v2/keys/dir?recursive=true")
        expect(
            reply,
            200,
            '{"action":"delete","node":{"key":"/dir","dir":true,"modifiedIndex":5,'
            '"createdIndex":4},"prevNode":{"key":"/dir","dir":true,"modifiedIndex":4,'
            '"createdIndex":4}}',
        )
        await s.call("PUT", "/v2/keys/newkey", "value=x")
        reply = await s.call("PUT", "/v2/keys/newkey/sub", "value=1")
        expect(reply, 400)
        assert reply.json() == {
            "errorCode": 104,
            "message": "Not a directory",
            "cause": "/newkey",
            "index": 6,
        }
        reply = await s.call("PUT", "/v2/keys/", "value=1")
        expect(reply, 400)
        assert reply.json()["errorCode"] == 107
        assert reply.json()["cause"] == "/"
        reply = await s.call("GET", "/v2/keys")
        expect(
            reply,
            200,
            '{"action":"get","node":{"dir":true,"nodes":[{"key":"/newkey","value":"x",'
            '"modifiedIndex":6,"createdIndex":6}]}}',
            etcd_index=6,
            raft=(12, 2),  # every proposal takes a Raft index, failed ones too
        )


async def test_in_order_keys_and_a_sorted_listing() -> None:
    async with v2_stack() as s:
        reply = await s.call("POST", "/v2/keys/queue", "value=Job1")
        expect(
            reply,
            201,
            '{"action":"create","node":{"key":"/queue/00000000000000000004","value":"Job1",'
            '"modifiedIndex":4,"createdIndex":4}}',
        )
        await s.call("POST", "/v2/keys/queue", "value=Job2")
        reply = await s.call("GET", "/v2/keys/queue?recursive=true&sorted=true")
        expect(
            reply,
            200,
            '{"action":"get","node":{"key":"/queue","dir":true,"nodes":['
            '{"key":"/queue/00000000000000000004","value":"Job1","modifiedIndex":4,'
            '"createdIndex":4},{"key":"/queue/00000000000000000005","value":"Job2",'
            '"modifiedIndex":5,"createdIndex":5}],"modifiedIndex":4,"createdIndex":4}}',
        )


async def test_hidden_keys_are_left_out_of_listings_but_readable() -> None:
    async with v2_stack() as s:
        await s.call("PUT", "/v2/keys/d/_hidden", "value=h")
        await s.call("PUT", "/v2/keys/d/shown", "value=s")
        listing = (await s.call("GET", "/v2/keys/d")).json()
        assert [node["key"] for node in listing["node"]["nodes"]] == ["/d/shown"]
        assert (await s.call("GET", "/v2/keys/d/_hidden")).json()["node"]["value"] == "h"


PARAMETER_ERRORS = [
    ("PUT", "?ttl=abc", "value=1", 202, 'invalid value for \\"ttl\\"'),
    ("PUT", "?ttl=-1", "value=1", 202, 'invalid value for \\"ttl\\"'),
    ("PUT", "?prevIndex=", "value=1", 203, 'invalid value for \\"prevIndex\\"'),
    ("PUT", "?prevIndex=1x", "", 203, 'invalid value for \\"prevIndex\\"'),
    ("GET", "?waitIndex=-5", "", 203, 'invalid value for \\"waitIndex\\"'),
    ("PUT", "?prevValue=", "value=1", 201, '\\"prevValue\\" cannot be empty'),
    ("PUT", "?recursive=", "value=1", 209, 'invalid value for \\"recursive\\"'),
    ("GET", "?sorted=yes", "", 209, 'invalid value for \\"sorted\\"'),
    ("GET", "?wait=maybe", "", 209, 'invalid value for \\"wait\\"'),
    ("PUT", "?dir=2", "", 209, 'invalid value for \\"dir\\"'),
    ("GET", "?quorum=on", "", 209, 'invalid value for \\"quorum\\"'),
    ("GET", "?stream=tRUE", "", 209, 'invalid value for \\"stream\\"'),
    ("PUT", "?noValueOnSuccess=x", "", 209, 'invalid value for \\"noValueOnSuccess\\"'),
    ("PUT", "?prevExist=nope", "", 209, "invalid value for prevExist"),
    ("PUT", "?refresh=nope", "", 209, "invalid value for refresh"),
    ("PUT", "?wait=true", "value=1", 209, '\\"wait\\" can only be used with GET requests'),
    ("DELETE", "?wait=true", "", 209, '\\"wait\\" can only be used with GET requests'),
    ("PUT", "?refresh=true&ttl=5", "value=v", 211, "A value was provided on a refresh"),
    ("PUT", "?refresh=true&prevExist=true", "", 212, "No TTL value set"),
    ("PUT", "?a=1;b=2", "value=1", 210, "invalid semicolon separator in query"),
    ("PUT", "", "value=%zz", 210, 'invalid URL escape \\"%zz\\"'),
    ("GET", "?x=%4", "", 210, 'invalid URL escape \\"%4\\"'),
]
MESSAGES = {
    201: "PrevValue is Required in POST form",
    202: "The given TTL in POST form is not a number",
    203: "The given index in POST form is not a number",
    209: "Invalid field",
    210: "Invalid POST form",
    211: "Value provided on refresh",
    212: "A TTL must be provided on refresh",
}


@pytest.mark.parametrize(("method", "query", "form", "code", "cause"), PARAMETER_ERRORS)
async def test_parameter_errors_have_etcds_bytes(
    method: str, query: str, form: str, code: int, cause: str
) -> None:
    async with v2_stack() as s:
        reply = await s.call(method, "/v2/keys/p" + query, form)
        expect(
            reply,
            400,
            f'{{"errorCode":{code},"message":"{MESSAGES[code]}","cause":"{cause}","index":0}}',
            etcd_index=0,
        )
        assert s.backend.proposed == []


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
async def test_go_booleans_are_accepted(text: str) -> None:
    async with v2_stack() as s:
        reply = await s.call("PUT", f"/v2/keys/d?dir={text}")
        assert reply.json()["node"]["dir"] is True


async def test_form_body_values_come_before_query_values() -> None:
    async with v2_stack() as s:
        reply = await s.call("PUT", "/v2/keys/p?value=query", "value=body&value=second")
        assert reply.json()["node"]["value"] == "body"
        reply = await s.call("PUT", "/v2/keys/q?value=from+query%21")
        assert reply.json()["node"]["value"] == "from query!"
        no_form_type = (("Content-Type", "text/plain"),)
        reply = await s.call("PUT", "/v2/keys/r", "value=ignored", headers=no_form_type)
        assert reply.json()["node"]["value"] == ""


async def test_a_delete_body_is_ignored_as_go_does() -> None:
    async with v2_stack() as s:
        await s.call("PUT", "/v2/keys/d/a", "value=1")
        reply = await s.call("DELETE", "/v2/keys/d", "recursive=true")
        assert reply.json()["errorCode"] == 102


async def test_no_value_on_success() -> None:
    async with v2_stack() as s:
        reply = await s.call("PUT", "/v2/keys/rf?noValueOnSuccess=true", "value=3")
        expect(reply, 201, '{"action":"set"}', raft=(6, 2))
        reply = await s.call("DELETE", "/v2/keys/rf?noValueOnSuccess=true")
        assert reply.json()["action"] == "delete" and "node" in reply.json()


async def test_quorum_get_and_head() -> None:
    async with v2_stack() as s:
        await s.call("PUT", "/v2/keys/k", "value=v")
        reply = await s.call("GET", "/v2/keys/k?quorum=true")
        assert reply.json()["node"]["value"] == "v"
        head = await s.call("HEAD", "/v2/keys/k")
        get = await s.call("GET", "/v2/keys/k")
        assert head.body == b""
        assert head.headers.get("Content-Length") == str(len(get.body))
        expect(head, 200, None, etcd_index=4, raft=(6, 2))
        missing = await s.call("HEAD", "/v2/keys/none")
        assert (missing.status, missing.body) == (404, b"")


async def test_other_methods_get_405_with_allow() -> None:
    async with v2_stack() as s:
        reply = await s.call("PATCH", "/v2/keys/a")
        assert reply.status == 405
        assert reply.headers.get("Allow") == "HEAD,GET,PUT,POST,DELETE"
        assert reply.headers.get("Content-Type") == "text/plain; charset=utf-8"
        assert reply.body == b"Method Not Allowed\n"
        assert "X-Etcd-Cluster-Id" not in reply.headers


async def test_backend_failures_are_raft_internal_errors() -> None:
    async with v2_stack() as s:
        s.backend.failure = BackendTimeout()
        reply = await s.call("PUT", "/v2/keys/k", "value=v")
        expect(
            reply,
            500,
            '{"errorCode":300,"message":"Raft Internal Error",'
            '"cause":"etcdserver: request timed out","index":0}',
            etcd_index=0,
        )
        s.backend.failure = NoLeader()
        reply = await s.call("GET", "/v2/keys/k?quorum=true")
        assert reply.json()["cause"] == "etcdserver: no leader"
        reply = await s.call("GET", "/v2/keys/k")  # a local read needs no leader
        assert reply.json()["errorCode"] == 100


async def test_invalid_utf8_and_bad_escapes() -> None:
    async with v2_stack() as s:
        reply = await s.call("GET", "/v2/keys/%ff")
        expect(
            reply,
            400,
            '{"errorCode":210,"message":"Invalid POST form",'
            '"cause":"invalid UTF-8 in the path","index":0}',
            etcd_index=0,
        )
        reply = await s.call("PUT", "/v2/keys/a", "value=%C3%28")
        expect(reply, 400)
        assert reply.json()["errorCode"] == 210
        assert "UTF-8" in reply.json()["cause"]
        reply = await s.call("GET", "/v2/keys/a?%ff=1")
        assert reply.json()["errorCode"] == 210
        reply = await s.call("GET", "/v2/keys/%zz")
        assert (reply.status, reply.body) == (400, b'400 Bad Request: invalid URL escape "%zz"\n')
        reply = await s.call("PUT", "/v2/keys/caf%C3%A9", "value=%E2%82%AC")
        assert reply.json()["node"] == {
            "key": "/café",
            "value": "€",
            "modifiedIndex": 4,
            "createdIndex": 4,
        }


async def test_json_is_escaped_as_go_escapes_it() -> None:
    async with v2_stack() as s:
        value = quote('<a>&\u2028\b"\\')
        reply = await s.call("PUT", "/v2/keys/x", f"value={value}")
        assert b'"value":"\\u003ca\\u003e\\u0026\\u2028\\u0008\\"\\\\"' in reply.body


async def test_unclean_paths_are_redirected_like_serve_mux() -> None:
    async with v2_stack() as s:
        reply = await s.call("GET", "/v2/keys//a?x=1")
        assert reply.status == 301
        assert reply.headers.get("Location") == "/v2/keys/a?x=1"
        assert reply.body == b'<a href="/v2/keys/a?x=1">Moved Permanently</a>.\n\n'
        reply = await s.call("PUT", "/v2/keys/a/../b", "value=1")
        assert (reply.status, reply.headers.get("Location"), reply.body) == (301, "/v2/keys/b", b"")
        reply = await s.call("GET", "/v2/keys/a/")  # a trailing slash is clean
        assert reply.status == 404


async def test_unknown_paths_options_and_cors() -> None:
    async with v2_stack() as s:
        for path in ("/foo", "/v2/nothing", "/v2", "/v2/keysx", "/v2/stats", "/health/"):
            reply = await s.call("GET", path)
            assert (reply.status, reply.body) == (404, b"404 page not found\n"), path
            assert reply.headers.get("X-Content-Type-Options") == "nosniff"
            assert reply.headers.get("Access-Control-Allow-Origin") == "*"
        reply = await s.call("OPTIONS", "/v2/keys/a")
        assert (reply.status, reply.body, reply.headers.get("Content-Length")) == (200, b"", "0")
        assert all(reply.headers.get(name) == value for name, value in CORS.items())


async def test_members_list_leader_add_update_remove() -> None:
    async with v2_stack() as s:
        reply = await s.call("GET", "/v2/members")
        assert reply.status == 200
        assert reply.body == (
            b'{"members":[{"id":"628ed94ad692e8a1","name":"n1",'
            b'"peerURLs":["http://127.0.0.1:23800"],"clientURLs":["http://127.0.0.1:23790"]}]}\n'
        )
        assert reply.headers.get("X-Etcd-Cluster-Id") == CLUSTER
        reply = await s.call("GET", "/v2/members/leader")
        assert reply.json()["id"] == "628ed94ad692e8a1"
        assert reply.body.endswith(b"}\n")
        json_type = (("Content-Type", "application/json"),)
        add = '{"peerURLs":["http://127.0.0.1:23801"]}'
        reply = await s.call("POST", "/v2/members", add, headers=json_type)
        assert (reply.status, reply.body) == (
            201,
            b'{"id":"91406527cefe73c","name":"","peerURLs":["http://127.0.0.1:23801"],'
            b'"clientURLs":[]}\n',
        )
        reply = await s.call("POST", "/v2/members", add, headers=json_type)
        assert (reply.status, reply.body) == (409, b'{"message":"membership: peerURL exists"}')
        reply = await s.call("POST", "/v2/members", add, headers=(("Content-Type", "text/plain"),))
        assert (reply.status, reply.json()) == (
            415,
            {"message": "Bad Content-Type text/plain, accept application/json"},
        )
        update = '{"peerURLs":["http://127.0.0.1:23809"]}'
        reply = await s.call("PUT", "/v2/members/91406527cefe73c", update, headers=json_type)
        assert (reply.status, reply.body, reply.headers.get("Content-Length")) == (204, b"", None)
        assert s.backend.members_list[1].peer_urls == ("http://127.0.0.1:23809",)
        reply = await s.call("DELETE", "/v2/members/91406527cefe73c")
        assert reply.status == 204
        reply = await s.call("DELETE", "/v2/members/91406527cefe73c")
        assert (reply.status, reply.body) == (404, b'{"message":"No such member: 91406527cefe73c"}')
        reply = await s.call("DELETE", "/v2/members/nonexist")
        assert (reply.status, reply.body) == (404, b'{"message":"No such member: nonexist"}')
        reply = await s.call("PUT", "/v2/members", update, headers=json_type)
        assert (reply.status, reply.body) == (405, b"Method Not Allowed\n")
        reply = await s.call("GET", "/v2/members/xyz")
        assert (reply.status, reply.body) == (404, b'{"message":"Not found"}')
        reply = await s.call("HEAD", "/v2/members")
        assert (reply.status, reply.headers.get("Allow")) == (405, "GET,POST,DELETE,PUT")
        s.backend.leader_member = None
        reply = await s.call("GET", "/v2/members/leader")
        assert (reply.status, reply.body) == (503, b'{"message":"During election"}')


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"peerURLs": []}, "no valid URLs given"),
        ({}, "no valid URLs given"),
        ({"peerURLs": ["ftp://h:1"]}, "URL scheme must be http, https, unix, or unixs: ftp://h:1"),
        ({"peerURLs": ["http://h"]}, 'URL address does not have the form "host:port": http://h'),
        ({"peerURLs": ["http://h:1/p"]}, "URL must not contain a path: http://h:1/p"),
    ],
)
def test_peer_urls_are_checked_like_etcd(document: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("/", "/") + "$"):
        parse_peer_urls(document)


def test_peer_urls_are_sorted() -> None:
    assert parse_peer_urls({"peerURLs": ["http://b:2", " http://a:1 "]}) == (
        "http://a:1",
        "http://b:2",
    )


async def test_machines_stats_version_health() -> None:
    async with v2_stack() as s:
        reply = await s.call("GET", "/v2/machines")
        assert (reply.status, reply.body) == (200, b"http://127.0.0.1:23790")
        assert reply.headers.get("Content-Type") == "text/plain; charset=utf-8"
        reply = await s.call("POST", "/v2/machines")
        assert (reply.status, reply.headers.get("Allow")) == (405, "GET,HEAD")
        reply = await s.call("GET", "/v2/stats/self")
        assert reply.json()["leaderInfo"]["leader"] == "628ed94ad692e8a1"
        assert not reply.body.endswith(b"\n")
        reply = await s.call("GET", "/v2/stats/leader")
        assert reply.body == b'{"leader":"628ed94ad692e8a1","followers":{}}'
        await s.call("GET", "/v2/keys/missing")
        reply = await s.call("GET", "/v2/stats/store")
        assert reply.json()["getsFail"] == 1
        assert reply.headers.get("Content-Type") == "application/json"
        s.backend.leader_member = None
        reply = await s.call("GET", "/v2/stats/leader")
        assert (reply.status, reply.body) == (403, b'{"message":"not current leader"}')
        reply = await s.call("GET", "/version")
        assert reply.body == b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}'
        assert reply.headers.get("Content-Type") == "application/json"
        reply = await s.call("POST", "/version")
        assert (reply.status, reply.headers.get("Allow")) == (405, "GET")
        reply = await s.call("GET", "/health")
        assert (reply.status, reply.body) == (200, b'{"health":"true"}')
        s.backend.healthy = False
        reply = await s.call("GET", "/health")
        assert (reply.status, reply.body) == (503, b'{"health":"false"}\n')
        reply = await s.call("PUT", "/health")
        assert reply.status == 405


async def test_a_watch_flushes_its_headers_before_the_event() -> None:
    async with v2_stack() as s:
        async with s.client.stream("GET", "/v2/keys/w?wait=true") as watch:
            assert watch.status == 200
            assert watch.headers.get("X-Etcd-Index") == "3"
            assert watch.headers.get("Transfer-Encoding") == "chunked"
            assert s.backend.store.hub.count == 1
            await s.call("PUT", "/v2/keys/other", "value=1")
            await s.call("PUT", "/v2/keys/w", "value=x")
            body = [chunk async for chunk in watch.chunks()]
        assert body == [
            b'{"action":"set","node":{"key":"/w","value":"x","modifiedIndex":5,"createdIndex":5}}\n'
        ]
        assert s.backend.store.hub.count == 0


async def test_a_stream_watch_sends_one_event_per_chunk_until_the_client_leaves() -> None:
    async with v2_stack() as s:
        async with s.client.stream("GET", "/v2/keys/d?wait=true&recursive=true&stream=true") as w:
            chunks = w.chunks()
            for value in ("1", "2"):
                await s.call("PUT", f"/v2/keys/d/{value}", f"value={value}")
                event = json.loads(await chunks.__anext__())
                assert event["node"] == {
                    "key": f"/d/{value}",
                    "value": value,
                    "modifiedIndex": 3 + int(value),
                    "createdIndex": 3 + int(value),
                }
        with trio.fail_after(5):
            while s.backend.store.hub.count:
                await trio.sleep(0.01)


async def test_a_watch_from_the_history_and_an_outdated_one() -> None:
    async with v2_stack() as s:
        await s.call("PUT", "/v2/keys/h", "value=1")
        await s.call("PUT", "/v2/keys/h", "value=2")
        reply = await s.call("GET", "/v2/keys/h?wait=true&waitIndex=4")
        assert reply.headers.get("X-Etcd-Index") == "5"
        assert reply.json()["node"]["value"] == "1"
        for _ in range(1000):
            s.backend.store.apply(V2Request("PUT", "/_fill", value="x", time_ns=1))
        reply = await s.call("GET", "/v2/keys/h?wait=true&waitIndex=4")
        expect(
            reply,
            400,
            '{"errorCode":401,"message":"The event in requested index is outdated and cleared",'
            '"cause":"the requested history has been cleared [6/4]","index":1005}',
            etcd_index=1005,
        )


async def test_wait_with_quorum_is_a_plain_quorum_get() -> None:
    async with v2_stack() as s:
        reply = await s.call("GET", "/v2/keys/q?wait=true&quorum=true")
        expect(reply, 404, etcd_index=3)


async def test_an_expiry_reaches_a_watcher() -> None:
    async with v2_stack() as s:
        await s.call("PUT", "/v2/keys/exp?ttl=1", "value=e")
        async with s.client.stream("GET", "/v2/keys/exp?wait=true") as watch:
            s.backend.advance(1.5)  # expired half a second ago: ttl rounds to 0, left out
            s.backend.expire()
            [chunk] = [chunk async for chunk in watch.chunks()]
        event = json.loads(chunk)
        assert event["action"] == "expire"
        assert event["node"] == {"key": "/exp", "modifiedIndex": 5, "createdIndex": 4}
        assert "ttl" not in event["prevNode"]


def test_parse_key_request_builds_the_store_request() -> None:
    form = {"value": ["v"], "ttl": ["10"], "prevExist": ["false"], "dir": ["f"]}
    now_ns = 5_000_000_000
    parsed = parse_key_request("PUT", "/k", form, now_ns=now_ns)
    assert parsed.request == V2Request(
        "PUT", "/k", value="v", prev_exist=False, expiration_ns=15_000_000_000, time_ns=now_ns
    )
    parsed = parse_key_request("GET", "/k", {"quorum": ["1"], "wait": ["true"]}, now_ns=1)
    assert (parsed.request.method, parsed.wait, parsed.quorum) == ("QGET", True, True)
    assert parse_key_request("HEAD", "/k", {"quorum": ["1"]}, now_ns=1).request.method == "GET"
    huge = parse_key_request("PUT", "/k", {"ttl": [str(2**64 - 1)]}, now_ns=1)
    assert huge.request.expiration_ns == 2**63 - 1
    with pytest.raises(V2Error) as caught:
        parse_key_request("PUT", "/k", {"ttl": [str(2**64)]}, now_ns=1)
    assert (caught.value.code, caught.value.index) == (202, 0)


async def test_the_handler_can_be_called_directly() -> None:
    api = V2Api(FakeBackend())
    request = Request("GET", "/v2/keys/", "/v2/keys/", "", Headers([("Host", "h")]))
    response = await api(request)
    assert response.status == 200
    assert await api.route(Request("GET", "/v3/kv/range", "/v3/kv/range", "", Headers())) is None
