"""The v2 API's query and form parsing (``net.gocompat``, ``net.v2api``) against hostile text.

Properties: ``parse_query``/``unescape_path`` return values or raise ``FormError``;
``parse_key_request`` returns a request or raises ``V2Error``; the v2 handler never raises,
answers a refused request with etcd's v2 error JSON (``errorCode``, ``message``, ``cause``,
``index``) or Go's plain text, and a refused request is never proposed.
"""

from __future__ import annotations

import contextlib
import json

from hypothesis import example, given
from hypothesis import strategies as st

from net.gocompat import FormError, parse_query, unescape_path
from net.http.messages import Headers, Request, StreamingResponse
from net.v2api import V2Api, parse_key_request
from storage.v2store.model import V2Error
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.harness import run_virtual
from tests.net.v2_fake import START_NS, FakeBackend

NAMES = [
    "value", "ttl", "prevValue", "prevIndex", "prevExist", "recursive", "sorted", "wait",
    "waitIndex", "dir", "quorum", "stream", "refresh", "noValueOnSuccess",
]  # fmt: skip
VALUES = [
    "", "1", "0", "true", "false", "T", "x", "%zz", "%ff", "%e2%82", "a+b",
    "18446744073709551616", "-1", "\u00e9",
]  # fmt: skip
QUERY_TEXT = st.text(alphabet=st.sampled_from("%+;=&?#/aZ09.~ \u00e9\u00ff\t"), max_size=40)


@st.composite
def queries(draw: st.DrawFn) -> str:
    """Name=value pairs of the v2 parameters, or query-ish text."""
    if draw(st.booleans()):
        return draw(QUERY_TEXT)
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(NAMES) | QUERY_TEXT, st.sampled_from(VALUES) | QUERY_TEXT),
            max_size=5,
        )
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


@fuzz_settings(fast=100, ci=5000)
@given(queries())
@example("a=%")
@example("%e9=1")
@example("a=1;b=2")
def test_queries_parse_or_raise_form_error(query: str) -> None:
    try:
        values = parse_query(query)
    except FormError as error:
        assert str(error)
    else:
        assert all(isinstance(value, str) for items in values.values() for value in items)
    with contextlib.suppress(FormError):
        unescape_path(query)


@fuzz_settings(fast=100, ci=5000)
@given(
    st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"]),
    st.text(max_size=12).map(lambda key: "/" + key),
    queries(),
    st.integers(0, (1 << 63) - 1),
)
def test_key_requests_parse_or_raise_v2_error(
    method: str, key: str, query: str, now_ns: int
) -> None:
    try:
        form = parse_query(query)
    except FormError:
        return
    try:
        parse_key_request(method, key, form, now_ns)
    except V2Error as error:
        assert 200 <= error.code < 300


@st.composite
def v2_requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]))
    path = draw(
        st.sampled_from(["/v2/keys/a", "/v2/keys/", "/v2/keys", "/v2/members", "/v2/machines"])
        | st.sampled_from(["/v2/keys/", "/v2/members/", "/v2//keys/"]).flatmap(
            lambda prefix: QUERY_TEXT.map(lambda tail: prefix + tail)
        )
    )
    query = draw(queries())
    body_query = draw(queries())
    content_type = draw(
        st.sampled_from(
            [
                "application/x-www-form-urlencoded",
                "application/json",
                "Application/X-WWW-Form-Urlencoded; charset=utf-8",
                "",
            ]
        )
    )
    body = body_query.encode("utf-8")
    if path.startswith("/v2/members") and draw(st.booleans()):
        body = draw(
            st.sampled_from(
                [
                    b'{"peerURLs":["http://10.0.0.9:2380"]}',
                    b'{"peerURLs":["http://[::1:2380"]}',
                    b'{"peerURLs":"x"}',
                    b"[1]",
                    b"{",
                    b'{"peerURLs":["unix://a:1/p"]}',
                ]
            )
        )
    headers = Headers([("Host", "t"), ("Content-Type", content_type)])
    target = path + ("?" + query if query else "")
    return Request(method, target, path, query, headers, body)


@fuzz_settings(fast=80, ci=3000)
@given(v2_requests())
@example(
    Request("PUT", "/v2/keys/a", "/v2/keys/a", "ttl=1&refresh=true&prevExist=x", Headers(()), b"")
)
@example(Request("PUT", "/v2/keys/%e9", "/v2/keys/%e9", "", Headers(()), b""))
def test_the_v2_api_answers_in_etcds_shape_and_refusals_are_not_proposed(request: Request) -> None:
    backend = FakeBackend()
    backend.clock_ns = START_NS

    async def main() -> None:
        api = V2Api(backend)
        response = await api(request)
        if isinstance(response, StreamingResponse):
            await response.chunks.aclose()  # type: ignore[attr-defined]
            if response.on_close is not None:
                await response.on_close()
            return
        status, body = response.status, response.body
        assert 200 <= status <= 599, status
        if status >= 400 and body.startswith(b"{"):
            error = json.loads(body)
            assert "message" in error, error
            if "errorCode" in error:
                # etcd's v2 Error: "cause" is omitempty.
                assert {"errorCode", "message", "index"} <= set(error), error
                assert set(error) <= {"errorCode", "message", "cause", "index"}, error
                if 200 <= error["errorCode"] < 300:
                    # A parameter error (etcd's 2xx codes): refused before any proposal.
                    assert status == 400, status
                    assert backend.proposed == [], backend.proposed

    run_virtual(main)
