"""etcd 3.4's v2 auth: the pure model (patterns, merges, Go's JSON) and the endpoints over
the real v2 store behind a fake member. The expected bodies were taken from etcd 3.4.23."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from net.http import Headers, HttpServer, Request, Response, StreamingResponse
from net.tcp import TcpNetwork
from net.tls import ServingNetwork, TlsFiles, server_context
from net.v2api import V2Api
from net.v2auth import (
    AuthError,
    InvalidJson,
    Permissions,
    Role,
    RWPermission,
    User,
    basic_auth,
    decode_role,
    decode_user,
    merge_role,
    merge_user,
)
from storage.v2store.store import system_path
from tests.net.v2_fake import FakeBackend


class PlainPasswords:
    """Passwords without bcrypt's cost: the hash is the password, marked."""

    async def hash(self, password: str) -> str:
        return "hashed:" + password

    async def check(self, hashed: str, password: str) -> bool:
        return hashed == "hashed:" + password


def role(read: tuple[str, ...], write: tuple[str, ...] = (), name: str = "r") -> Role:
    return Role(name, Permissions(RWPermission(read, write)))


# ---------------------------------------------------------------- the pure model


@pytest.mark.parametrize(
    ("pattern", "key", "simple", "recursive"),
    [
        ("/foo", "/foo", True, False),
        ("/foo", "/foo/x", False, False),
        ("/foo/*", "/foo/x", True, True),
        ("/foo/*", "/foo", False, False),
        ("/foo/*", "/foo/", True, True),
        ("/foo*", "/foobar", True, True),
        ("/*", "", False, False),
        ("/*", "/", True, True),
    ],
)
def test_key_patterns(pattern: str, key: str, simple: bool, recursive: bool) -> None:
    assert role((pattern,)).has_key_access(key, write=False) is simple
    assert role((pattern,)).has_recursive_access(key, write=False) is recursive
    assert role((), (pattern,)).has_key_access(key, write=True) is simple
    assert role((pattern,)).has_key_access(key, write=True) is False  # read only


def test_the_root_role_may_do_anything() -> None:
    root = Role("root")
    assert root.has_key_access("", write=True)
    assert root.has_recursive_access("/x", write=True)


def test_go_json_decoding() -> None:
    assert decode_user(b' {"User":"a","ROLES":["x"]} trailing') == User("a", "", ("x",))
    assert decode_user(b"null") == User()
    assert decode_user(b'{"user":"a","roles":null,"x":1}') == User("a", "", None)
    for bad in (b"", b"xx", b'{"user":1}', b'{"roles":"x"}', b"[]", b'{"user":NaN}'):
        with pytest.raises(InvalidJson):
            decode_user(bad)
    decoded = decode_role(b'{"role":"q","grant":{"kv":{}}}')
    assert decoded.grant == Permissions() and decoded.grant.is_empty()
    assert decoded.to_json() == {
        "role": "q",
        "permissions": {"kv": {"read": None, "write": None}},
        "grant": {"kv": {"read": None, "write": None}},
    }


def test_user_json_leaves_out_empty_fields() -> None:
    assert User("a", "", None).to_json() == {"user": "a", "roles": None}
    assert User("a", "h", ("r",), ("g",)).to_json() == {
        "user": "a",
        "password": "h",
        "roles": ["r"],
        "grant": ["g"],
    }


async def test_user_merge() -> None:
    old = User("a", "h", None)
    merged = await merge_user(old, User("a", grant=("r2", "r1")), PlainPasswords())
    assert merged == User("a", "h", ("r1", "r2"))
    # a nil role list becomes an empty one: a change, as for etcd's DeepEqual
    assert await merge_user(old, User("a"), PlainPasswords()) == User("a", "h", ())
    with pytest.raises(AuthError, match="Granting duplicate role r1 for user a") as raised:
        await merge_user(merged, User("a", grant=("r1",)), PlainPasswords())
    assert raised.value.status == 409
    with pytest.raises(AuthError, match="auth: Revoking ungranted role z for user a"):
        await merge_user(merged, User("a", revoke=("z",)), PlainPasswords())
    renamed = await merge_user(merged, User("a", "new"), PlainPasswords())
    assert renamed.password == "hashed:new"


def test_role_merge() -> None:
    old = role(("/b",))
    grant = Role("r", grant=Permissions(RWPermission(("/a/*",), ("/w",))))
    assert merge_role(old, grant) == role(("/a/*", "/b"), ("/w",))
    revoke = Role("r", revoke=Permissions(RWPermission(("/b", "/nope"))))
    assert merge_role(old, revoke) == Role("r", Permissions(RWPermission((), ())))
    with pytest.raises(AuthError, match="Granting duplicate read permission /b"):
        merge_role(old, Role("r", grant=Permissions(RWPermission(("/b",)))))


def test_basic_auth() -> None:
    token = base64.b64encode(b"alice:pw:x").decode()
    assert basic_auth(f"Basic {token}") == ("alice", "pw:x")
    assert basic_auth(f"bAsIc {token}") == ("alice", "pw:x")
    assert basic_auth("Basic !!!") is None
    assert basic_auth("Bearer x") is None
    assert basic_auth("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert basic_auth(None) is None


# ---------------------------------------------------------------- the endpoints


class Client:
    def __init__(self, *, client_cert_auth: bool = False) -> None:
        self.backend = FakeBackend()
        self.api = V2Api(self.backend, PlainPasswords(), lambda: client_cert_auth)

    async def call(
        self,
        method: str,
        path: str,
        body: str = "",
        *,
        user: str | None = None,
        certificate: str | None = None,
    ) -> Response:
        headers: list[tuple[str, str]] = []
        if user is not None:
            headers.append(("Authorization", "Basic " + base64.b64encode(user.encode()).decode()))
        if method in ("PUT", "POST") and path.startswith("/v2/keys"):
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        target_path, _, query = path.partition("?")
        request = Request(
            method,
            path,
            target_path,
            query,
            Headers(headers),
            body.encode(),
            peer_common_name=certificate,
        )
        response = await self.api(request)
        assert not isinstance(response, StreamingResponse)
        return response


def shown(response: Response) -> tuple[int, object]:
    body = json.loads(response.body) if response.body else None
    return response.status, body


async def test_enable_needs_a_root_user_then_guards_everything() -> None:
    c = Client()
    message = "auth: No root user available, please create one"
    assert shown(await c.call("PUT", "/v2/auth/enable")) == (409, {"message": message})
    reply = await c.call("PUT", "/v2/auth/users/root", '{"user":"root","password":"pw"}')
    assert shown(reply) == (201, {"user": "root", "roles": ["root"]})
    stored = c.backend.store.get(system_path("/2/users/root"), now_ns=0).node.value
    assert stored is not None and json.loads(stored)["password"] == "hashed:pw"
    assert shown(await c.call("PUT", "/v2/auth/enable")) == (200, None)
    assert shown(await c.call("GET", "/v2/auth/enable")) == (200, {"enabled": True})
    no = {"message": "Insufficient credentials"}
    assert shown(await c.call("GET", "/v2/auth/users")) == (401, no)
    assert shown(await c.call("GET", "/v2/auth/users", user="root:bad")) == (401, no)
    reply = await c.call("GET", "/v2/auth/roles/guest", user="root:pw")
    guest = {"role": "guest", "permissions": {"kv": {"read": ["/*"], "write": ["/*"]}}}
    assert shown(reply) == (200, guest)
    reply = await c.call("DELETE", "/v2/auth/users/root", user="root:pw")
    message = "auth: Cannot delete root user while auth is enabled."
    assert shown(reply) == (403, {"message": message})
    # the guest role lets anyone in until it is taken away
    assert (await c.call("PUT", "/v2/keys/a", "value=1")).status == 201
    assert (await c.call("DELETE", "/v2/auth/roles/guest", user="root:pw")).status == 200
    reply = await c.call("GET", "/v2/keys/a")
    assert reply.status == 401
    assert json.loads(reply.body)["errorCode"] == 110
    assert dict(reply.headers)["X-Etcd-Index"] == "0"
    assert (await c.call("GET", "/v2/keys/a", user="root:pw")).status == 200
    # /v2/members: reads free, writes need root
    assert (await c.call("GET", "/v2/members")).status == 200
    reply = await c.call("DELETE", "/v2/members/1234")
    assert shown(reply) == (401, no)


async def test_a_user_gets_its_roles_patterns() -> None:
    c = Client()
    await c.call("PUT", "/v2/auth/users/root", '{"user":"root","password":"pw"}')
    await c.call("PUT", "/v2/auth/roles/r1", '{"role":"r1"}')
    grant = '{"role":"r1","grant":{"kv":{"read":["/foo/*","/bar"],"write":["/foo/*"]}}}'
    reply = await c.call("PUT", "/v2/auth/roles/r1", grant)
    r1 = {"role": "r1", "permissions": {"kv": {"read": ["/bar", "/foo/*"], "write": ["/foo/*"]}}}
    assert shown(reply) == (200, r1)
    body = '{"user":"alice","password":"apw","roles":["r1"]}'
    assert shown(await c.call("PUT", "/v2/auth/users/alice", body)) == (
        200,  # etcd: a user created with roles is answered 200
        {"user": "alice", "roles": ["r1"]},
    )
    await c.call("PUT", "/v2/auth/enable")
    await c.call("DELETE", "/v2/auth/roles/guest", user="root:pw")
    assert (await c.call("PUT", "/v2/keys/foo/x", "value=1", user="alice:apw")).status == 201
    assert (await c.call("PUT", "/v2/keys/foo", "value=1", user="alice:apw")).status == 401
    assert (await c.call("GET", "/v2/keys/bar", user="alice:apw")).status == 404
    assert (await c.call("PUT", "/v2/keys/bar", "value=1", user="alice:apw")).status == 401
    assert (await c.call("GET", "/v2/keys/foo?recursive=true", user="alice:apw")).status == 401
    assert (await c.call("GET", "/v2/keys/foo/?recursive=true", user="alice:apw")).status == 200
    assert (await c.call("GET", "/v2/auth/users", user="alice:apw")).status == 401


async def test_request_errors_in_etcds_words() -> None:
    c = Client()
    bob = "/v2/auth/users/bob"
    both = '{"role":"q","permissions":{"kv":{"read":["/x"]}},"revoke":{"kv":{"read":["/a"]}}}'
    cases = [
        ("PUT", bob, "xx", 400, "Invalid JSON in request body."),
        ("PUT", bob, "null", 400, "User JSON name does not match the name in the URL"),
        ("PUT", bob, '{"user":"bob"}', 400, "auth: Cannot create user bob with an empty password"),
        ("PUT", bob, '{"user":"bob","grant":["x"]}', 404, "auth: User bob does not exist."),
        ("PUT", bob, '{"user":"bob","grant":["x"],"roles":["y"]}', 400,
         "User JSON contains both roles and grant/revoke"),
        ("DELETE", bob, "", 404, "auth: User bob does not exist"),
        ("GET", "/v2/auth/users/a/b", "", 400, "Invalid path"),
        ("PUT", "/v2/auth/roles/root", '{"role":"root"}', 403,
         "auth: Cannot modify role root: is root role."),
        ("DELETE", "/v2/auth/roles/nope", "", 404, "auth: Role nope doesn't exist."),
        ("PUT", "/v2/auth/roles/nope", '{"role":"nope","grant":{"kv":{"read":["/a"]}}}', 404,
         "auth: Role nope does not exist."),
        ("PUT", "/v2/auth/roles/q", both, 400,
         "Role JSON contains both permissions and grant/revoke"),
        ("DELETE", "/v2/auth/enable", "", 409, "auth: already disabled"),
    ]  # fmt: skip
    for method, path, body, status, message in cases:
        reply = await c.call(method, path, body)
        assert shown(reply) == (status, {"message": message}), (method, path, body)
    reply = await c.call("POST", "/v2/auth/users")
    assert (reply.status, dict(reply.headers)["Allow"]) == (405, "GET")
    reply = await c.call("POST", "/v2/auth/enable")
    assert (reply.status, dict(reply.headers)["Allow"]) == (405, "GET,PUT,DELETE")
    assert (await c.call("GET", "/v2/auth")).status == 404
    assert (await c.call("GET", "/v2/auth/enable/x")).status == 404


async def test_auth_records_are_out_of_reach_of_the_keys() -> None:
    c = Client()
    before = c.backend.store.index
    await c.call("PUT", "/v2/auth/users/root", '{"user":"root","password":"pw"}')
    assert (await c.call("GET", "/v2/keys/2/users/root")).status == 404
    reply = await c.call("GET", "/v2/keys/?recursive=true")
    assert "/2" not in [node["key"] for node in json.loads(reply.body)["node"].get("nodes", [])]
    # the four bookkeeping writes and the user moved the index, as in etcd
    assert dict(reply.headers)["X-Etcd-Index"] == str(before + 5)


@pytest.mark.parametrize("client_cert_auth", [True, False])
async def test_a_client_certificate_names_the_user_with_client_cert_auth(
    client_cert_auth: bool,
) -> None:
    c = Client(client_cert_auth=client_cert_auth)
    await c.call("PUT", "/v2/auth/users/root", '{"user":"root","password":"pw"}')
    await c.call("PUT", "/v2/auth/roles/r", '{"role":"r","permissions":{"kv":{"read":["/a"]}}}')
    await c.call("PUT", "/v2/auth/users/carol", '{"user":"carol","password":"c","roles":["r"]}')
    await c.call("PUT", "/v2/auth/enable")
    revoke = '{"role":"guest","revoke":{"kv":{"read":["/*"]}}}'
    assert (await c.call("PUT", "/v2/auth/roles/guest", revoke, user="root:pw")).status == 200
    # a certificate: its user when the flag is on, ignored (guest: no read left) when off
    reply = await c.call("GET", "/v2/keys/a", certificate="carol")
    assert reply.status == (404 if client_cert_auth else 401)
    reply = await c.call("GET", "/v2/auth/users", certificate="root")
    assert reply.status == (200 if client_cert_auth else 401)
    # an unknown name falls back to the guest role (keys) or is refused (root's endpoints)
    guest_write = await c.call("PUT", "/v2/keys/b", "value=1", certificate="nobody")
    assert guest_write.status == 201  # the guest role can still write /*
    assert (await c.call("GET", "/v2/auth/users", certificate="nobody")).status == 401
    # credentials win over the certificate
    reply = await c.call("GET", "/v2/auth/users", user="carol:c", certificate="root")
    assert reply.status == 401


async def test_requests_on_tls_carry_the_verified_client_certificates_name(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("127.0.0.1", common_name="carol")
    for name, blob in (("ca", ca.cert_pem), ("cert", server.cert_chain_pems[0])):
        blob.write_to_path(str(tmp_path / f"{name}.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    files = TlsFiles(
        str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), str(tmp_path / "ca.pem"), True
    )
    seen: list[str | None] = []

    async def handler(request: Request) -> Response:
        seen.append(request.peer_common_name)
        return Response(200)

    network = ServingNetwork(TcpNetwork(), server_contexts={"127.0.0.1:0": server_context(files)})
    async with trio.open_nursery() as nursery:
        address = await nursery.start(HttpServer(network, handler).serve, "127.0.0.1:0")
        host, port = address.rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        client.configure_cert(context)
        stream = trio.SSLStream(
            await trio.open_tcp_stream(host, int(port)), context, server_hostname=host
        )
        for _ in range(2):  # named on each request of the connection
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await stream.receive_some()).startswith(b"HTTP/1.1 200")
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert seen == ["carol", "carol"]
