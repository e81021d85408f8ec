"""v2 auth against etcd 3.4.23: the same ``/v2/auth`` and guarded ``/v2/keys`` and
``/v2/members`` requests on 3 troika and 3 etcd members, compared reply by reply (status,
``Content-Type``, ``Allow``, CORS, ``X-Etcd-Index`` as a delta from an anchor write, the
presence of ``X-Etcd-Cluster-Id``, the body as JSON); then auth state across a member
restart, python-etcd's auth classes with a username and password, ``ETCDCTL_API=2
etcdctl`` user, role and auth commands (output and exit codes compared), and client
certificates naming v2 users under ``--client-cert-auth`` (one TLS member of each).

The requests go to member 0 of each cluster (a local read then sees the member's own writes).
The whole sequence is one test: auth is cluster-wide state and each step depends on the ones
before it (no root user yet, enabled, guest role gone, ...).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import etcd  # type: ignore[import-untyped]
import etcd.auth  # type: ignore[import-untyped]
import pytest
import trustme

from bench.clusters import EtcdCluster, PortBlock, TroikaCluster
from tests.process.test_real_clients import ETCDCTL, Etcdctl, Run
from tests.process.test_serve_operations import ETCD, HOST, TROIKA, Single, running
from tests.process.v2diff import Normalizer, anchor, differences
from tests.process.v2http import Exchange, eventually, send

pytestmark = pytest.mark.process

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Step:
    """One request: ``user`` is ``name:password`` for HTTP basic auth (None: no header)."""

    method: str
    path: str
    body: str = ""
    user: str | None = None
    raw_authorization: str | None = None


def auth_header(step: Step) -> dict[str, str]:
    if step.raw_authorization is not None:
        return {"Authorization": step.raw_authorization}
    if step.user is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(step.user.encode()).decode()}


def perform(url: str, step: Step) -> Exchange:
    headers = auth_header(step)
    if step.body and step.path.startswith("/v2/keys"):
        headers["Content-Type"] = FORM
    if step.body and step.path.startswith("/v2/members"):
        headers["Content-Type"] = "application/json"
    path, _, query = step.path.partition("?")
    body = step.body.encode() if step.body else None
    return send(url, step.method, path, query=query or None, body=body, headers=headers)


ROOT = "root:rootpw"
ALICE = "alice:alicepw"
USERS = "/v2/auth/users"
ROLES = "/v2/auth/roles"
ENABLE = "/v2/auth/enable"
GRANT_R1 = '{"role":"r1","grant":{"kv":{"read":["/foo/*","/bar"],"write":["/foo/*"]}}}'
MEMBER = '{"peerURLs":["http://127.0.0.1:1"]}'
LONG_PASSWORD = "p" * 72 + "-and-more"
"""Longer than bcrypt reads: etcd's Go bcrypt ignores what follows the first 72 bytes."""
GUEST_READS = '{"role":"guest","permissions":{"kv":{"read":["/foo/*"]}}}'

SEQUENCE: tuple[Step, ...] = (
    # auth off: everything open; the endpoints answer, the errors of a fresh store
    Step("GET", ENABLE),
    Step("GET", USERS),
    Step("GET", ROLES),
    Step("GET", f"{ROLES}/guest"),
    Step("PUT", ENABLE),  # no root user
    Step("DELETE", ENABLE),  # already disabled
    Step("GET", f"{USERS}/root"),
    Step("PUT", f"{USERS}/root", '{"user":"root"}'),  # empty password
    Step("PUT", f"{USERS}/root", '{"user":"root","password":"rootpw"}'),
    Step("PUT", "/v2/keys/foo/x", "value=1"),  # the index moved by the auth writes
    Step("PUT", f"{USERS}/root", '{"user":"root","password":"rootpw"}'),  # an update
    Step("GET", f"{USERS}/root"),
    Step("PUT", f"{ROLES}/r1", '{"role":"r1"}'),
    Step("PUT", f"{ROLES}/r1", '{"role":"r1"}'),  # exists
    Step("PUT", f"{ROLES}/r2", '{"role":"r2","permissions":{"kv":{"read":["/a/*"]}}}'),
    Step("PUT", f"{ROLES}/r1", GRANT_R1),
    Step("PUT", f"{ROLES}/r1", '{"role":"r1","grant":{"kv":{"read":["/bar"]}}}'),
    Step("PUT", f"{ROLES}/r1", '{"role":"r1","revoke":{"kv":{"read":["/nope"]}}}'),
    Step(
        "PUT",
        f"{ROLES}/r1",
        '{"role":"r1","permissions":{"kv":{"read":["/x"]}},"revoke":{"kv":{"read":["/bar"]}}}',
    ),
    Step("PUT", f"{ROLES}/q", '{"role":"q","grant":{"kv":{}}}'),  # stored with its grant
    Step("GET", f"{ROLES}/q"),
    Step("PUT", f"{ROLES}/q", '{"role":"q","grant":{"kv":{"write":["/w"]}}}'),
    Step("PUT", f"{ROLES}/root", '{"role":"root"}'),
    Step("DELETE", f"{ROLES}/root"),
    Step("DELETE", f"{ROLES}/nope"),
    Step("PUT", f"{ROLES}/nope", '{"role":"nope","grant":{"kv":{"read":["/bar"]}}}'),
    Step("GET", ROLES),
    Step("PUT", f"{USERS}/alice", '{"user":"alice","password":"alicepw","roles":["r1","gone"]}'),
    Step("PUT", f"{USERS}/alice", '{"user":"alice","password":"x","roles":["r1"]}'),  # exists
    Step("PUT", f"{USERS}/alice", '{"user":"alice","grant":["r2"]}'),
    Step("PUT", f"{USERS}/alice", '{"user":"alice","grant":["r2"]}'),
    Step("PUT", f"{USERS}/alice", '{"user":"alice","revoke":["zz"]}'),
    Step("PUT", f"{USERS}/alice", '{"user":"alice","revoke":["gone"],"roles":["x"]}'),
    Step("GET", f"{USERS}/alice"),  # a role that does not exist: 404
    Step("PUT", f"{USERS}/alice", '{"User":"alice","Revoke":["gone"]} trailing'),
    Step("PUT", f"{USERS}/alice", '{"user":"alice"}'),  # nothing to change
    Step("GET", f"{USERS}/alice"),
    Step("GET", USERS),
    Step("GET", f"{USERS}/"),
    Step("PUT", f"{USERS}/carl", '{"user":"carl"}'),
    Step("PUT", f"{USERS}/carl", '{"user":"carl","grant":["r1"]}'),
    Step("PUT", f"{USERS}/dora", '{"user":"dora","password":"d"}'),  # roles null
    Step("PUT", f"{USERS}/dora", '{"user":"dora"}'),  # null -> []: updated
    Step("PUT", f"{USERS}/dora", '{"user":"dora"}'),  # now unchanged
    Step("DELETE", f"{USERS}/dora"),
    Step("DELETE", f"{USERS}/nobody"),
    Step("PUT", f"{USERS}/long", json.dumps({"user": "long", "password": LONG_PASSWORD})),
    Step("PUT", f"{USERS}/erin", '{"user":"erin","password":"e","roles":[]}'),  # roles []
    Step("DELETE", f"{USERS}/erin"),
    Step("PUT", f"{USERS}/long", '{"user":"long","grant":["r1"]}'),
    Step("PUT", f"{ROLES}/_hidden", '{"role":"_hidden"}'),
    Step("GET", ROLES),  # a hidden record is not listed
    Step("GET", f"{ROLES}/_hidden"),
    Step("DELETE", f"{ROLES}/_hidden"),
    Step("PUT", f"{ROLES}/r%C3%A9le", '{"role":"r\u00e9le"}'),  # an escaped name
    Step("GET", f"{ROLES}/r%C3%A9le"),
    Step("DELETE", f"{ROLES}/r%C3%A9le"),
    Step("GET", f"{USERS}/a%2Fb"),
    Step("GET", f"{USERS}/./x"),  # unclean: redirected
    Step("GET", f"{USERS}?a=%zz"),  # a malformed query
    # malformed requests, paths and methods
    Step("PUT", f"{USERS}/bob", "xx"),
    Step("PUT", f"{USERS}/bob", ""),
    Step("PUT", f"{USERS}/bob", "null"),
    Step("PUT", f"{USERS}/bob", '{"user":"bobby"}'),
    Step("PUT", f"{USERS}/bob", '{"user":"bob","roles":"x"}'),
    Step("PUT", f"{ROLES}/bob", '{"role":"bob","permissions":{"kv":{"read":"/x"}}}'),
    Step("GET", f"{USERS}/a/b"),
    Step("GET", f"{ROLES}/a/b"),
    Step("POST", USERS),
    Step("PUT", ROLES),
    Step("POST", f"{USERS}/x"),
    Step("POST", ENABLE),
    Step("GET", "/v2/auth"),
    Step("GET", "/v2/auth/enable/x"),
    # auth on: the guest role is created
    Step("PUT", ENABLE),
    Step("PUT", ENABLE),  # no credentials: refused
    Step("PUT", ENABLE, user=ROOT),  # already enabled
    Step("GET", ENABLE),
    Step("GET", ENABLE, user=ALICE),
    Step("DELETE", ENABLE, user=ALICE),
    Step("GET", f"{ROLES}/guest"),
    Step("GET", f"{ROLES}/guest", user=ROOT),
    Step("GET", USERS, user="root:wrong"),
    Step("GET", USERS, user="nobody:x"),
    Step("GET", USERS, user=ALICE),
    Step("DELETE", f"{USERS}/root", user=ROOT),
    # the guest role lets everyone in; the keys check comes after the parameters' check
    Step("GET", "/v2/keys/foo/x"),
    Step("GET", "/v2/keys"),  # the key "" matches no pattern, not even /*
    Step("GET", "/v2/keys/"),
    Step("HEAD", "/v2/keys/foo/x"),
    Step("PUT", "/v2/keys/foo/y", "value=2"),
    Step("GET", "/v2/keys/foo/x?wait=true&waitIndex=abc"),
    Step("DELETE", f"{ROLES}/guest", user=ROOT),
    Step("GET", "/v2/keys/foo/x"),
    Step("GET", "/v2/keys/foo/x?prevIndex=abc"),
    Step("GET", "/v2/keys/foo/x?wait=true"),  # refused at once, not a watch
    Step("PUT", "/v2/keys/foo/x", "value=3"),
    Step("PUT", "/v2/keys/foo/x", "value=3", user=ALICE),
    Step("PUT", "/v2/keys/foo", "value=3", user=ALICE),
    Step("PUT", "/v2/keys/bar", "value=3", user=ALICE),
    Step("GET", "/v2/keys/bar", user=ALICE),
    Step("GET", "/v2/keys/foo/x", user="alice:bad"),
    Step("GET", "/v2/keys/foo/x", user="long:" + LONG_PASSWORD),
    Step("GET", "/v2/keys/foo/x", user="long:" + LONG_PASSWORD[:72] + "other tail"),
    Step("GET", "/v2/keys/foo/x", user="long:" + LONG_PASSWORD[:71]),
    Step("GET", "/v2/keys/foo/x", user="nobody:x"),
    # sorted: etcd lists a directory's children in Go's map order, different every time
    Step("GET", "/v2/keys/foo?recursive=true&sorted=true", user=ALICE),
    Step("GET", "/v2/keys/foo/?recursive=true&sorted=true", user=ALICE),
    Step("GET", "/v2/keys/foo/x", raw_authorization="Basic !!!"),
    Step("GET", "/v2/keys/foo/x", raw_authorization="Bearer x"),
    Step("GET", "/v2/keys/foo/x", user=ROOT),
    Step("DELETE", "/v2/keys/foo/y", user=ROOT),
    Step("GET", "/v2/keys/2/users/root", user=ROOT),  # the records are not keys
    # members: reads open, writes need root
    Step("POST", "/v2/members", MEMBER),
    Step("POST", "/v2/members", MEMBER, user=ALICE),
    Step("PUT", "/v2/members/1", MEMBER, user=ALICE),
    Step("DELETE", "/v2/members/1", user=ALICE),
    Step("DELETE", "/v2/members/1", user=ROOT),  # root passes the check: no such member
    # the guest role again, then auth off
    Step("PUT", f"{ROLES}/guest", '{"role":"guest","permissions":{"kv":{"read":["/foo/*"]}}}'),
    Step(
        "PUT", f"{ROLES}/guest", '{"role":"guest","permissions":{"kv":{"read":["/foo/*"]}}}', ROOT
    ),
    Step("GET", "/v2/keys/foo/x"),
    Step("PUT", "/v2/keys/foo/x", "value=4"),
    Step("DELETE", ENABLE, user=ROOT),
    Step("DELETE", ENABLE, user=ROOT),
    Step("PUT", "/v2/keys/foo/x", "value=5"),
    Step("DELETE", f"{USERS}/root"),
    Step("DELETE", f"{USERS}/alice"),
    Step("DELETE", f"{USERS}/long"),
    Step("DELETE", f"{ROLES}/r1"),
    Step("DELETE", f"{ROLES}/r2"),
    Step("DELETE", f"{ROLES}/q"),
    Step("DELETE", f"{ROLES}/guest"),
    Step("GET", USERS),
    Step("GET", ROLES),
)


def observe(normalizer: Normalizer, exchange: Exchange) -> tuple[dict[str, object], object]:
    headers = normalizer.headers(exchange.status, exchange.headers)
    return headers, normalizer.body(exchange.headers, exchange.body, exchange.sent_at)


def test_v2_auth_matches_etcd(troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster) -> None:
    troika_url, etcd_url = troika_cluster.client_urls[0], etcd_cluster.client_urls[0]
    sides = [
        (troika_url, Normalizer(anchor(troika_url, "v2auth"), "")),
        (etcd_url, Normalizer(anchor(etcd_url, "v2auth"), "")),
    ]
    found: list[str] = []
    for number, step in enumerate(SEQUENCE, start=1):
        (troika_headers, troika_body), (etcd_headers, etcd_body) = (
            observe(normalizer, perform(url, step)) for url, normalizer in sides
        )
        where = f"step {number} {step.method} {step.path} {step.body[:60]!r} user={step.user}"
        for part, left, right in (
            ("headers", troika_headers, etcd_headers),
            ("body", troika_body, etcd_body),
        ):
            found.extend(f"{where} {part}{difference}" for difference in differences(left, right))
    assert found == [], "\n".join(found)


def enabled(url: str) -> bool:
    reply = send(url, "GET", "/v2/auth/enable")
    return bool(reply.status == 200 and reply.json()["enabled"])


def test_auth_state_survives_a_member_restart(troika_cluster: TroikaCluster) -> None:
    url = troika_cluster.client_urls[1]
    root = {"Authorization": "Basic " + base64.b64encode(b"root:pw1").decode()}
    body = b'{"user":"root","password":"pw1"}'
    assert send(url, "PUT", "/v2/auth/users/root", body=body).status in (200, 201)
    assert send(url, "PUT", "/v2/auth/enable").status == 200
    assert send(url, "DELETE", "/v2/auth/roles/guest", headers=root).status == 200
    try:
        troika_cluster.restart(1)
        eventually(lambda: enabled(url), bool)
        assert send(url, "GET", "/v2/keys/").status == 401
        assert send(url, "GET", "/v2/keys/", headers=root).status == 200
        assert send(url, "GET", "/v2/auth/users/root", headers=root).json() == {
            "user": "root",
            "roles": [{"role": "root", "permissions": {"kv": {"read": ["/*"], "write": ["/*"]}}}],
        }
    finally:
        send(url, "DELETE", "/v2/auth/enable", headers=root)
        send(url, "DELETE", "/v2/auth/users/root")
    assert not enabled(url)


@pytest.mark.parametrize("system", ["troika_cluster", "etcd_cluster"])
def test_python_etcd_with_username_and_password(
    system: str, request: pytest.FixtureRequest
) -> None:
    cluster: TroikaCluster | EtcdCluster = request.getfixturevalue(system)
    host, port = cluster.client_urls[2].removeprefix("http://").split(":")
    admin = etcd.Client(host=host, port=int(port), read_timeout=10)
    root = etcd.auth.EtcdUser(admin, "root")
    root.password = "rootpw"
    root.write()
    writer = etcd.auth.EtcdRole(admin, "pywriter")
    writer.grant("/py/*", "RW")
    writer.write()
    user = etcd.auth.EtcdUser(admin, "py")
    user.password = "pypw"
    user.roles = {"pywriter"}
    user.write()
    root_client = etcd.Client(
        host=host, port=int(port), read_timeout=10, username="root", password="rootpw"
    )
    etcd.auth.Auth(admin).active = True
    try:
        assert etcd.auth.Auth(root_client).active is True
        etcd.auth.EtcdRole(root_client, "guest").delete()
        client = etcd.Client(
            host=host, port=int(port), read_timeout=10, username="py", password="pypw"
        )
        client.write("/py/k", "v")
        assert client.read("/py/k").value == "v"
        with pytest.raises(etcd.EtcdException):
            client.write("/other", "v")
        with pytest.raises(etcd.EtcdException):
            admin.read("/py/k")
        names = etcd.auth.EtcdUser(root_client, "py").names  # etcd 3.4: {"user": ...} each
        assert {"py", "root"} <= {entry["user"] for entry in names}
    finally:
        etcd.auth.Auth(root_client).active = False
        for name in ("py", "root"):
            etcd.auth.EtcdUser(admin, name).delete()
        etcd.auth.EtcdRole(admin, "pywriter").delete()


ETCDCTL_SESSION: tuple[tuple[str, ...], ...] = (
    ("auth", "disable"),
    ("user", "add", "root:rootpw"),
    ("role", "add", "ctlrole"),
    ("role", "add", "ctlrole"),
    ("role", "grant", "ctlrole", "--path", "/ctl2/*", "--rw"),
    ("role", "grant", "ctlrole", "--path", "/ro", "--read"),
    ("role", "get", "ctlrole"),
    ("role", "get", "nosuch"),
    ("user", "add", "bob:bobpw"),
    ("user", "add", "bob:bobpw"),  # an existing user: its password is set again
    ("user", "grant", "bob", "--roles", "ctlrole"),
    ("user", "grant", "bob", "--roles", "ctlrole"),
    ("user", "get", "bob"),
    ("user", "get", "nosuch"),
    ("auth", "enable"),
    ("-u", "root:rootpw", "role", "remove", "guest"),
    ("get", "/ctl2/x"),
    ("-u", "bob:bobpw", "set", "/ctl2/x", "1"),
    ("-u", "bob:bobpw", "get", "/ctl2/x"),
    ("-u", "bob:bobpw", "set", "/ro", "1"),
    ("-u", "bob:bobpw", "get", "/ro"),
    ("-u", "bob:wrong", "get", "/ctl2/x"),
    ("-u", "nobody:x", "get", "/ctl2/x"),
    ("-u", "bob:bobpw", "user", "list"),
    ("-u", "root:rootpw", "user", "revoke", "bob", "--roles", "ctlrole"),
    ("-u", "bob:bobpw", "get", "/ctl2/x"),
    ("-u", "root:rootpw", "user", "remove", "root"),
    ("-u", "root:rootpw", "role", "revoke", "ctlrole", "--path", "/ro", "--read"),
    ("-u", "root:rootpw", "role", "get", "ctlrole"),
    ("-u", "root:rootpw", "role", "add", "guest"),
    ("-u", "root:rootpw", "auth", "disable"),
    ("auth", "disable"),
    ("user", "remove", "bob"),
    ("user", "remove", "root"),
    ("role", "remove", "ctlrole"),
    ("role", "remove", "root"),
)


@pytest.mark.skipif(ETCDCTL is None, reason="etcdctl is not installed")
def test_etcdctl_v2_auth_commands_match_etcd(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> None:
    troika, reference = Etcdctl(troika_cluster), Etcdctl(etcd_cluster)
    found: list[str] = []
    for arguments in ETCDCTL_SESSION:
        ours, theirs = troika(*arguments), reference(*arguments)
        if ours != theirs:
            found.append(f"etcdctl {' '.join(arguments)}: troika {ours} != etcd {theirs}")
    assert found == [], "\n".join(found)
    # the session did what it says (not only failed alike), and left auth off
    assert troika("-u", "bob:bobpw", "get", "/ctl2/x") == Run(0, "1\n", "")
    assert troika("auth", "disable") == Run(1, "", "auth: already disabled\n")


def tls_call(
    url: str, files: dict[str, str], method: str, path: str, body: str = "", *, cert: str
) -> tuple[int, object]:
    """One HTTPS request with the client certificate ``cert``: (status, what the body says)."""
    context = ssl.create_default_context(cafile=files["ca"])
    context.load_cert_chain(files[cert], files[cert + "-key"])
    host, port = url.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(host, int(port), timeout=10, context=context)
    headers = {"Content-Type": FORM} if path.startswith("/v2/keys") and body else {}
    if cert == "carol-basic":
        headers["Authorization"] = "Basic " + base64.b64encode(b"carol:c").decode()
    try:
        connection.request(method, path, body=body.encode() or None, headers=headers)
        response = connection.getresponse()
        data = response.read()
    except http.client.RemoteDisconnected:
        return 0, "closed without a reply"
    finally:
        connection.close()
    document = json.loads(data) if data else None
    if isinstance(document, dict):  # indexes differ between the two histories
        document = {name: value for name, value in document.items() if name != "index"}
        document.pop("node", None)
    return response.status, document


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed")
def test_client_certificates_name_v2_users_as_in_etcd(tmp_path: Path) -> None:
    ca = trustme.CA()
    blobs = {"ca": ca.cert_pem}
    server = ca.issue_cert(HOST)
    blobs["server"], blobs["server-key"] = server.cert_chain_pems[0], server.private_key_pem
    for name in ("root", "carol", "nobody"):
        leaf = ca.issue_cert(f"{name}.example", common_name=name)
        blobs[name], blobs[name + "-key"] = leaf.cert_chain_pems[0], leaf.private_key_pem
    blobs["carol-basic"], blobs["carol-basic-key"] = blobs["nobody"], blobs["nobody-key"]
    files: dict[str, str] = {}
    for name, blob in blobs.items():
        blob.write_to_path(str(tmp_path / f"{name}.pem"))
        files[name] = str(tmp_path / f"{name}.pem")
    flags = [
        f"--cert-file={files['server']}",
        f"--key-file={files['server-key']}",
        f"--trusted-ca-file={files['ca']}",
        "--client-cert-auth=true",
        "--enable-v2=true",
    ]
    script = [
        ("PUT", "/v2/auth/users/root", '{"user":"root","password":"pw"}', "carol"),
        ("PUT", "/v2/auth/roles/r", '{"role":"r","permissions":{"kv":{"read":["/a"]}}}', "carol"),
        ("PUT", "/v2/auth/users/carol", '{"user":"carol","password":"c","roles":["r"]}', "carol"),
        ("PUT", "/v2/auth/enable", "", "carol"),
        ("GET", "/v2/auth/users", "", "root"),  # the certificate names root
        ("GET", "/v2/auth/users", "", "carol"),
        ("GET", "/v2/auth/users", "", "nobody"),
        ("PUT", "/v2/auth/roles/guest", '{"role":"guest","revoke":{"kv":{"read":["/*"]}}}', "root"),
        ("GET", "/v2/keys/a", "", "carol"),  # carol's role reads /a
        ("PUT", "/v2/keys/a", "value=1", "carol"),
        ("GET", "/v2/keys/a", "", "nobody"),  # no such user: the guest role, which cannot read
        ("PUT", "/v2/keys/b", "value=1", "nobody"),  # but can write
        ("GET", "/v2/auth/users", "", "carol-basic"),  # credentials win over the certificate
        ("DELETE", "/v2/auth/enable", "", "root"),
    ]  # fmt: skip
    seen: dict[str, list[tuple[int, object]]] = {}
    block = PortBlock.claim(range(6))
    try:
        assert ETCD is not None
        members = (("etcd", [ETCD], block.base), ("troika", TROIKA, block.base + 3))
        for name, binary, base in members:
            member = Single(binary, tmp_path / name, base, scheme="https")
            with running(member, flags):
                seen[name] = [
                    tls_call(member.client_url, files, method, path, body, cert=cert)
                    for method, path, body, cert in script
                ]
    finally:
        block.release()
    # etcd drops the connection when a certificate names no user and its CA certificate has
    # no CommonName (trustme's): it looks the empty name up, finds the /2/users directory
    # and dereferences its missing value (a recovered panic). Those steps differ on purpose.
    unknown = [number for number, step in enumerate(script) if step[3] == "nobody"]
    for number in unknown:
        assert seen["etcd"][number] == (0, "closed without a reply")
    compared = [number for number in range(len(script)) if number not in unknown]
    assert [seen["troika"][n] for n in compared] == [seen["etcd"][n] for n in compared]
    statuses = [status for status, _ in seen["troika"]]
    assert statuses[4:13] == [200, 401, 401, 200, 404, 401, 401, 201, 401]
