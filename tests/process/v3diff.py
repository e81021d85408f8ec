"""The machinery of the v3 differential suite: one request sequence sent to troika and to
etcd 3.4 over the JSON gateway or over gRPC, and the replies compared once the numbers that
may differ are put on a common footing.

Requests are written once, in the gateway's JSON form, with two conveniences: the ``bytes``
fields (``key``, ``range_end``, ``value``) are plain text, base64-encoded when sent, and
``{p}`` in them is the case's key prefix (``/<transport>/<case>``); any string may hold
``{rev+N}`` (or ``{rev-N}``), the anchor revision plus N on that system. The same body goes
to the gateway as JSON and, parsed into the request message (``google.protobuf.json_format``,
which reads the gateway's encoding), over gRPC as a generic unary call.

Replies: a gRPC response becomes the gateway's JSON form (``MessageToDict`` with the proto
field names: int64 as strings, bytes in base64, zero fields left out, enums by name), so both
transports are normalized the same way:

- ``cluster_id``, ``member_id`` and ``raft_term`` in a header become ``"set"``;
- revisions (``revision``, ``create_revision``, ``mod_revision``, ``compact_revision``) become
  deltas from the anchor put made at the start of the case (``B+3``; older ones ``old``);
- keys and values are decoded, the case prefix shown as ``{p}``.

Over the gateway: the HTTP status, the headers that matter (``Content-Type``,
``Grpc-Metadata-Content-Type``, ``Trailer``, CORS, ``X-Content-Type-Options``, ``Allow``),
for errors whether the body is chunked, and the body (JSON as data, other text as is); over
gRPC, the response message, or the status code and details of an error (a malformed
protobuf's details only up to the parser's own words).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped]
from google.protobuf import json_format
from google.protobuf.message import Message

from net.etcdpb import rpc_pb2

Transport = Literal["gateway", "grpc"]
TRANSPORTS: tuple[Transport, ...] = ("gateway", "grpc")

REQUEST_TIMEOUT_S = 15.0
BYTES_FIELDS = frozenset({"key", "range_end", "value", "rangeEnd"})
REVISION_FIELDS = frozenset({"revision", "create_revision", "mod_revision", "compact_revision"})
HEADER_SET_FIELDS = frozenset({"cluster_id", "member_id", "raft_term"})
TEMPLATE_REVISION = re.compile(r"\{rev([+-]\d+)\}")
TEMPLATE_LEASE = re.compile(r"\{lease\+(\d+)\}")
"""A lease id of the case: the same on both systems, another for each case and transport."""
COMPARED_HEADERS = (
    "content-type",
    "grpc-metadata-content-type",
    "trailer",
    "x-content-type-options",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "allow",
)

RPCS: dict[str, tuple[str, type[Message], type[Message]]] = {
    "KV/Range": ("/v3/kv/range", rpc_pb2.RangeRequest, rpc_pb2.RangeResponse),
    "KV/Put": ("/v3/kv/put", rpc_pb2.PutRequest, rpc_pb2.PutResponse),
    "KV/DeleteRange": (
        "/v3/kv/deleterange",
        rpc_pb2.DeleteRangeRequest,
        rpc_pb2.DeleteRangeResponse,
    ),
    "KV/Txn": ("/v3/kv/txn", rpc_pb2.TxnRequest, rpc_pb2.TxnResponse),
    "KV/Compact": ("/v3/kv/compaction", rpc_pb2.CompactionRequest, rpc_pb2.CompactionResponse),
    "Cluster/MemberList": (
        "/v3/cluster/member/list",
        rpc_pb2.MemberListRequest,
        rpc_pb2.MemberListResponse,
    ),
    "Lease/LeaseGrant": (
        "/v3/lease/grant",
        rpc_pb2.LeaseGrantRequest,
        rpc_pb2.LeaseGrantResponse,
    ),
    "Lease/LeaseRevoke": (
        "/v3/lease/revoke",
        rpc_pb2.LeaseRevokeRequest,
        rpc_pb2.LeaseRevokeResponse,
    ),
    "Lease/LeaseTimeToLive": (
        "/v3/lease/timetolive",
        rpc_pb2.LeaseTimeToLiveRequest,
        rpc_pb2.LeaseTimeToLiveResponse,
    ),
    "Maintenance/Status": (
        "/v3/maintenance/status",
        rpc_pb2.StatusRequest,
        rpc_pb2.StatusResponse,
    ),
}
"""RPC name -> (gateway path in etcd 3.4, request type, response type)."""


# ---------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Call:
    """One v3 request, on both transports unless ``only`` names one.

    Attributes:
        rpc: ``"KV/Range"`` etc. (a key of :data:`RPCS`, or any ``Service/Method`` with
            ``grpc_raw``).
        body: the request in the gateway's JSON form (bytes fields as text, see above).
        raw: the gateway body as sent, instead of ``body``'s JSON (malformed input).
        grpc_raw: the serialized request sent over gRPC, instead of ``body`` (malformed input).
        path: the gateway path instead of the RPC's (aliases, unknown paths).
        method: the gateway's HTTP method.
        content_type: the gateway request's Content-Type (None: no header).
        headers: more gateway request headers.
        drop: top-level response fields left out of the comparison.
        shape: a function applied to both normalized bodies before comparing (for replies
            whose numbers are each system's own, such as Status).
        only: the one transport this step runs on.
    """

    rpc: str
    body: Mapping[str, Any] | None = None
    raw: bytes | None = None
    grpc_raw: bytes | None = None
    path: str | None = None
    method: str = "POST"
    content_type: str | None = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    shape: Callable[[Any], Any] | None = None
    only: Transport | None = None


@dataclass(frozen=True)
class Case:
    """A named request sequence; ``xfail`` maps a transport to why it differs on purpose or
    by a known troika bug (a strict expected failure)."""

    name: str
    steps: tuple[Call, ...]
    xfail: Mapping[Transport, str] = field(default_factory=dict)
    transports: tuple[Transport, ...] = TRANSPORTS

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:80]


def RANGE(key: str, **fields: Any) -> Call:
    return Call("KV/Range", {"key": key, **fields})


def PUT(key: str, value: str = "", **fields: Any) -> Call:
    body: dict[str, Any] = {"key": key, **fields}
    if value:
        body["value"] = value
    return Call("KV/Put", body)


def DELETE(key: str, **fields: Any) -> Call:
    return Call("KV/DeleteRange", {"key": key, **fields})


def TXN(
    compare: list[dict[str, Any]] | None = None,
    success: list[dict[str, Any]] | None = None,
    failure: list[dict[str, Any]] | None = None,
) -> Call:
    body: dict[str, Any] = {}
    for name, value in (("compare", compare), ("success", success), ("failure", failure)):
        if value is not None:
            body[name] = value
    return Call("KV/Txn", body)


def COMPACT(revision: str, physical: bool = False) -> Call:
    body: dict[str, Any] = {"revision": revision}
    if physical:
        body["physical"] = True
    return Call("KV/Compact", body)


def op_put(key: str, value: str = "", **fields: Any) -> dict[str, Any]:
    return {"request_put": {"key": key, **({"value": value} if value else {}), **fields}}


def op_range(key: str, **fields: Any) -> dict[str, Any]:
    return {"request_range": {"key": key, **fields}}


def op_delete(key: str, **fields: Any) -> dict[str, Any]:
    return {"request_delete_range": {"key": key, **fields}}


def op_txn(
    compare: list[dict[str, Any]] | None = None,
    success: list[dict[str, Any]] | None = None,
    failure: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body = TXN(compare, success, failure).body
    assert body is not None
    return {"request_txn": dict(body)}


def cmp(key: str, target: str, result: str, **fields: Any) -> dict[str, Any]:
    """A compare; the target's field (``value``, ``version``, ...) in ``fields``."""
    return {"key": key, "target": target, "result": result, **fields}


# ---------------------------------------------------------------------------- filling


@dataclass
class Normalizer:
    """One system's view of a case: its anchor revision and the case's key prefix."""

    base: int
    prefix: str

    def fill_text(self, text: str) -> str:
        text = text.replace("{p}", self.prefix)
        text = TEMPLATE_LEASE.sub(lambda match: str(self.lease_id(int(match.group(1)))), text)
        return TEMPLATE_REVISION.sub(lambda match: str(self.base + int(match.group(1))), text)

    def lease_id(self, number: int) -> int:
        """``{lease+number}``: from the prefix, so both systems use the same id."""
        return (zlib.crc32(self.prefix.encode()) << 8) + number

    def fill(self, value: Any, name: str = "") -> Any:
        """The request with templates resolved and bytes fields in base64."""
        if isinstance(value, Mapping):
            return {key: self.fill(item, key) for key, item in value.items()}
        if isinstance(value, list):
            return [self.fill(item, name) for item in value]
        if isinstance(value, str):
            text = self.fill_text(value)
            if name in BYTES_FIELDS:
                return base64.b64encode(text.encode()).decode()
            return text
        return value

    def revision(self, text: str) -> str:
        number = int(text)
        return f"B+{number - self.base}" if number >= self.base else "old"

    def text(self, encoded: str) -> str:
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return f"<not base64: {encoded!r}>"
        return decoded.decode(errors="backslashreplace").replace(self.prefix, "{p}")

    def json(self, value: Any, name: str = "") -> Any:
        """A reply in the gateway's JSON form, normalized (see the module docstring)."""
        if isinstance(value, list):
            return [self.json(item, name) for item in value]
        if not isinstance(value, dict):
            if name in BYTES_FIELDS and isinstance(value, str):
                return self.text(value)
            if name in REVISION_FIELDS and isinstance(value, str) and value.lstrip("-").isdigit():
                return self.revision(value)
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            if name == "header" and key in HEADER_SET_FIELDS:
                out[key] = "set" if item not in ("", "0", 0) else item
            else:
                out[key] = self.json(item, key)
        return out


# ---------------------------------------------------------------------------- transports


class Target:
    """Member 0 of one cluster: its URL and a gRPC channel to it."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.host, self.port = parts.hostname, parts.port
        self.channel = grpc.insecure_channel(f"{self.host}:{self.port}")

    def close(self) -> None:
        self.channel.close()

    def grpc_call(self, path: str, request: bytes) -> tuple[bytes | None, tuple[str, str] | None]:
        """(serialized response, None) or (None, (status code name, details))."""
        call = self.channel.unary_unary(path)
        try:
            return call(request, timeout=REQUEST_TIMEOUT_S), None
        except grpc.RpcError as error:
            return None, (error.code().name, error.details() or "")

    def http(
        self,
        method: str,
        path: str,
        body: bytes | None,
        content_type: str | None,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            headers.update(extra or {})
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            found = {name.lower(): value for name, value in response.getheaders()}
            return response.status, found, payload
        finally:
            connection.close()

    def put(self, key: str, value: str) -> rpc_pb2.PutResponse:
        """A plain put over gRPC (anchors and setup)."""
        request = rpc_pb2.PutRequest(key=key.encode(), value=value.encode())
        reply, error = self.grpc_call("/etcdserverpb.KV/Put", request.SerializeToString())
        assert reply is not None, f"{self.name}: put {key} failed: {error}"
        return rpc_pb2.PutResponse.FromString(reply)


def grpc_path(rpc: str) -> str:
    return f"/etcdserverpb.{rpc}"


Observation = dict[str, Any]


def observe_grpc(target: Target, step: Call, normalizer: Normalizer) -> Observation:
    if step.grpc_raw is not None:
        payload = step.grpc_raw
        response_type: type[Message] | None = RPCS[step.rpc][2] if step.rpc in RPCS else None
    else:
        _, request_type, response_type = RPCS[step.rpc]
        request = request_type()
        json_format.ParseDict(normalizer.fill(step.body or {}), request, ignore_unknown_fields=True)
        payload = request.SerializeToString()
    reply, error = target.grpc_call(grpc_path(step.rpc), payload)
    if error is not None:
        code, details = error
        if step.grpc_raw is not None and details.startswith("grpc: error unmarshalling request"):
            details = "grpc: error unmarshalling request: <the parser's own words>"
        return {"status": code, "details": details}
    assert reply is not None and response_type is not None
    message = response_type.FromString(reply)
    document = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return {"status": "OK", "body": shaped(step, normalizer.json(document))}


def observe_gateway(target: Target, step: Call, normalizer: Normalizer) -> Observation:
    path = normalizer.fill_text(step.path) if step.path else RPCS[step.rpc][0]
    if step.raw is not None:
        body: bytes | None = step.raw
    elif step.body is not None:
        body = json.dumps(normalizer.fill(step.body)).encode()
    else:
        body = None
    status, headers, payload = target.http(step.method, path, body, step.content_type, step.headers)
    shown: Observation = {"status": status}
    for name in COMPARED_HEADERS:
        if name in headers:
            shown[name] = headers[name]
    if status != 200:
        # How an error is framed is part of etcd's behaviour (ETCD_API.md §9.4: chunked with
        # a Trailer header from the service, a Content-Length for input errors). A success
        # body is chunked by Go's net/http whenever it outgrows its 4 KiB buffer, which no
        # client can tell apart, so it is not compared.
        chunked = headers.get("transfer-encoding") == "chunked"
        shown["framing"] = "chunked" if chunked else "length"
    if headers.get("content-type", "").startswith("application/json"):
        try:
            document = json.loads(payload)
        except ValueError:
            shown["body"] = {"unparsable JSON": payload.decode(errors="replace")}
        else:
            shown["body"] = shaped(step, normalizer.json(document)) if status == 200 else document
    else:
        shown["body"] = payload.decode(errors="replace")
    return shown


def shaped(step: Call, document: Any) -> Any:
    if isinstance(document, dict):
        document = {name: value for name, value in document.items() if name not in step.drop}
    return step.shape(document) if step.shape is not None else document


# ---------------------------------------------------------------------------- comparing


def differences(troika: Any, etcd: Any, where: str = "") -> list[str]:
    """Where two normalized values differ."""
    if isinstance(troika, dict) and isinstance(etcd, dict):
        found: list[str] = []
        if set(troika) != set(etcd):
            found.append(
                f"{where or '.'}: fields only in troika {sorted(set(troika) - set(etcd))}, "
                f"only in etcd {sorted(set(etcd) - set(troika))}"
            )
        for name in troika.keys() & etcd.keys():
            found.extend(differences(troika[name], etcd[name], f"{where}.{name}"))
        return found
    if isinstance(troika, list) and isinstance(etcd, list):
        if len(troika) != len(etcd):
            return [f"{where}: troika has {len(troika)} items, etcd {len(etcd)}: {troika} / {etcd}"]
        found = []
        for number, (left, right) in enumerate(zip(troika, etcd, strict=True)):
            found.extend(differences(left, right, f"{where}[{number}]"))
        return found
    if troika != etcd:
        return [f"{where}: troika {troika!r} != etcd {etcd!r}"]
    return []


def anchor(target: Target, transport: Transport, slug: str) -> int:
    """The case's anchor put; its revision is the case's base."""
    return int(target.put(f"/_anchors/{transport}/{slug}", "anchor").header.revision)


def run_case(case: Case, transport: Transport, troika: Target, etcd: Target) -> list[str]:
    """Run ``case`` over ``transport`` on both systems step by step; every difference."""
    prefix = f"/{transport}/{case.slug}"
    sides = [
        (troika, Normalizer(anchor(troika, transport, case.slug), prefix)),
        (etcd, Normalizer(anchor(etcd, transport, case.slug), prefix)),
    ]
    observe = observe_gateway if transport == "gateway" else observe_grpc
    found: list[str] = []
    for number, step in enumerate(case.steps, start=1):
        if step.only is not None and step.only != transport:
            continue
        left, right = (observe(target, step, normalizer) for target, normalizer in sides)
        for difference in differences(left, right):
            found.append(f"step {number} {describe(step)}: {difference}")
    return found


def describe(step: Call) -> str:
    text = full_description(step)
    return text if len(text) <= 200 else text[:150] + f"... ({len(text)} characters)"


def full_description(step: Call) -> str:
    if step.raw is not None:
        return f"{step.method} {step.path or step.rpc} raw={step.raw!r}"
    if step.grpc_raw is not None:
        return f"{step.rpc} raw={step.grpc_raw!r}"
    return f"{step.rpc} {json.dumps(step.body)}" + (f" at {step.path}" if step.path else "")
