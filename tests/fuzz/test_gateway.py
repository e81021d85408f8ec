"""The v3 JSON gateway against random JSON and near-JSON bodies, for every route it serves.

Properties: ``decode_message`` returns a message or raises ``InputError`` (Go's text), never
another exception; the gateway answers 200 or an error in etcd's shape (``{"error",
"message","code"}``, Go's plain text for 404/405), never raises; and a body it refuses
(an input error) never reaches the backend.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message
from hypothesis import example, given
from hypothesis import strategies as st

from net.etcdpb.routes import GATEWAY_ROUTES, grpc_path
from net.http.messages import Headers, Request, Response, StreamingResponse
from net.v3.gateway import InputError, JsonGateway, decode_message
from net.v3.methods import Methods
from net.v3.service import v3_methods
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.harness import run_virtual
from tests.fuzz.mutations import mutated
from tests.net.test_v3_service import FakeV3Backend

FD = _descriptor.FieldDescriptor
METHODS: Methods = v3_methods(FakeV3Backend())
SERVED = sorted(path for path, route in GATEWAY_ROUTES.items() if grpc_path(*route) in METHODS)
UNSERVED = sorted(set(GATEWAY_ROUTES) - set(SERVED))
REQUEST_TYPES = {path: METHODS[grpc_path(*GATEWAY_ROUTES[path])].request_type for path in SERVED}

SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 70), 1 << 70),
    st.floats(allow_nan=False),
    st.sampled_from(["", "YQ==", "AAAA", "a", "-1", "1e3", "0x1", "9223372036854775808", "NaN"]),
    st.text(max_size=6),
)
ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _value_for(field: FD, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and depth < 3:
        single = json_for(field.message_type, depth + 1)
    elif field.enum_type is not None:
        names = [value.name for value in field.enum_type.values]
        single = st.sampled_from(names) | st.integers(-3, 10) | SCALARS
    else:
        single = SCALARS
    if field.is_repeated:
        return st.lists(single, max_size=3) | SCALARS
    return single | ANY_JSON


def json_for(message: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """JSON objects whose keys are (mostly) the message's field names, values of any type."""
    names = [name for field in message.fields for name in (field.name, field.json_name)]
    if not names:
        return st.dictionaries(st.text(max_size=4), ANY_JSON, max_size=2)
    by_name = {name: field for field in message.fields for name in (field.name, field.json_name)}
    return st.dictionaries(
        st.sampled_from(sorted(by_name)), st.deferred(lambda: ANY_JSON), max_size=4
    ).flatmap(
        lambda chosen: st.fixed_dictionaries(
            {name: _value_for(by_name[name], depth) for name in chosen}
        )
    )


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    """A JSON body for ``path``'s request type, maybe mutated into near-JSON."""
    value = draw(json_for(REQUEST_TYPES[path].DESCRIPTOR) | ANY_JSON)
    text = json.dumps(value, separators=(",", ":") if draw(st.booleans()) else (", ", ": "))
    data = text.encode()
    if draw(st.integers(0, 3)) == 0:
        data = draw(mutated([data, data + b"{}", b"[" + data]))
    return data


@st.composite
def routed_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(SERVED))
    return path, draw(bodies(path))


@fuzz_settings(fast=60, ci=2500)
@given(routed_bodies())
@example(("/v3/kv/range", b'{"key":"YQ==","limit":"1e400"}'))
@example(("/v3/kv/txn", b'{"compare":[{"target":"VALUE","value":"\\ud800"}]}'))
@example(("/v3/kv/put", b'{"key":' + b"[" * 5000 + b"]" * 5000 + b"}"))
@example(("/v3/kv/range", b'{"key":"YQ==","revision":-9223372036854775809}'))
def test_decode_message_returns_a_message_or_an_input_error(route: tuple[str, bytes]) -> None:
    path, body = route
    try:
        message = decode_message(REQUEST_TYPES[path], body)
    except InputError as error:
        assert str(error)
        return
    assert isinstance(message, REQUEST_TYPES[path])


def _is_error_shape(body: bytes) -> bool:
    value = json.loads(body)
    return (
        isinstance(value, dict)
        and set(value) == {"error", "message", "code"}
        and isinstance(value["code"], int)
        and value["error"] == value["message"]
    ) or (isinstance(value, dict) and set(value) == {"error"} and "grpc_code" in value["error"])


async def _body_of(response: Response | StreamingResponse) -> bytes:
    if isinstance(response, Response):
        return response.body
    chunks = [chunk async for chunk in response.chunks]
    if response.on_close is not None:
        await response.on_close()
    return b"".join(chunks)


@st.composite
def gateway_requests(draw: st.DrawFn) -> Request:
    path = draw(st.sampled_from([*SERVED, *UNSERVED, "/v3/kv/nope", "/v3beta/kv/range"]))
    body = draw(bodies(path)) if path in REQUEST_TYPES else draw(st.binary(max_size=40))
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "OPTIONS"]))
    headers = draw(
        st.lists(
            st.sampled_from(
                [
                    ("X-HTTP-Method-Override", "PUT"),
                    ("Grpc-Metadata-hasleader", "true"),
                    ("Authorization", "x"),
                    ("Content-Type", "application/json"),
                ]
            ),
            max_size=2,
        )
    )
    return Request(method, path, path, "", Headers(headers), body)


@fuzz_settings(fast=60, ci=2500)
@given(gateway_requests())
def test_the_gateway_answers_in_etcds_shape_and_refusals_never_reach_the_backend(
    request: Request,
) -> None:
    backend = FakeV3Backend()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            gateway = JsonGateway(v3_methods(backend), nursery)
            response = await gateway(request)
            body = await _body_of(response)
            nursery.cancel_scope.cancel()
        status = response.status
        assert status == 200 or 400 <= status <= 599, status
        if status in (404, 405):
            assert body.decode() in ("Not Found\n", "Method Not Allowed\n"), body
        elif status != 200:
            assert _is_error_shape(body), body
            if isinstance(response, Response):
                # Refused while reading the body: the backend never saw it.
                assert backend.requests == [], backend.requests
        elif request.method != "OPTIONS":
            json.loads(body)

    run_virtual(main)


def test_integers_take_only_ascii_digits() -> None:
    # Found by the fuzzer: Python's JSON scanner and int() read U+0661 (ARABIC-INDIC DIGIT ONE)
    # as a digit, so {"limit":1\u0661} was read as 11; Go refuses it.
    for body in ('{"limit":1\u0661}', '{"limit":"1\u0661"}'):
        with pytest.raises(InputError):
            decode_message(REQUEST_TYPES["/v3/kv/range"], body.encode())


def test_every_served_route_is_fuzzed() -> None:
    assert len(SERVED) >= 7, SERVED
    assert all(isinstance(REQUEST_TYPES[path](), Message) for path in SERVED)
