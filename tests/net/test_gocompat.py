"""Go's parsing and encoding rules, as etcd's clients see them."""

from __future__ import annotations

import pytest

from net.gocompat import (
    FormError,
    encode_json,
    escape_path,
    go_float,
    mux_clean_path,
    parse_bool,
    parse_query,
    parse_uint64,
    unescape_path,
)
from storage.v2store import clean_path


@pytest.mark.parametrize("text", ["", "yes", "on", "tRue", " true", "2", "-1"])
def test_parse_bool_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bool(text)


def test_parse_bool_accepts_go_spellings() -> None:
    assert [parse_bool(text) for text in ("1", "t", "T", "TRUE", "true", "True")] == [True] * 6
    assert [parse_bool(text) for text in ("0", "f", "F", "FALSE", "false", "False")] == [False] * 6


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1.0", "0x10", "\u0661", str(2**64)])
def test_parse_uint64_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_uint64(text)


def test_parse_uint64() -> None:
    assert parse_uint64("007") == 7
    assert parse_uint64(str(2**64 - 1)) == 2**64 - 1


def test_parse_query_keeps_order_and_appends() -> None:
    form = parse_query("b=2", {"a": ["body"]})
    assert parse_query("a=1&a=2&&c&d=x%20y+z", form) == {
        "a": ["body", "1", "2"],
        "b": ["2"],
        "c": [""],
        "d": ["x y z"],
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("a=1;b=2", "invalid semicolon separator in query"),
        ("a=%zz", 'invalid URL escape "%zz"'),
        ("a=%", 'invalid URL escape "%"'),
        ("%g1=1", 'invalid URL escape "%g1"'),
        ("a=%ff", "invalid UTF-8 in form value 'a'"),
    ],
)
def test_parse_query_errors(query: str, message: str) -> None:
    with pytest.raises(FormError) as caught:
        parse_query(query)
    assert str(caught.value) == message


def test_paths() -> None:
    assert unescape_path("/a%2Fb+c/%C3%A9") == "/a/b+c/é"
    with pytest.raises(FormError):
        unescape_path("/%ff")
    assert clean_path("/1/../../x") == "/x"
    assert clean_path("a/./b/../../..") == "/"
    assert clean_path("") == "/"
    assert mux_clean_path("") == "/"
    assert mux_clean_path("/a//b/./c/") == "/a/b/c/"
    assert mux_clean_path("/a/..") == "/"
    assert escape_path("/k/a b?#%é$&+,:;=@~") == "/k/a%20b%3F%23%25%C3%A9$&+,:;=@~"


def test_encode_json_escapes_like_go() -> None:
    value = {"s": '<>&\u2028\u2029\b\f\n\r\t\x01\x7f"\\é😀', "n": None, "l": [True, 1]}
    assert (
        encode_json(value, newline=True)
        == (
            '{"s":"\\u003c\\u003e\\u0026\\u2028\\u2029\\u0008\\u000c\\n\\r\\t\\u0001\x7f\\"\\\\é😀",'
            '"n":null,"l":[true,1]}\n'
        ).encode()
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-3.0, "-3"),
        (0.5, "0.5"),
        (1.06, "1.06"),
        (13694.96, "13694.96"),
        (0.000561, "0.000561"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.2345e300, "1.2345e+300"),
        (0.0, "0"),
    ],
)
def test_floats_are_written_as_go_writes_them(value: float, text: str) -> None:
    assert go_float(value) == text
    assert encode_json({"x": [value]}) == f'{{"x":[{text}]}}'.encode()


def test_marks_in_user_text_are_left_alone() -> None:
    text = "\ue0000\ue001"
    assert encode_json({"a": text, "b": 1.0}) == f'{{"a":"{text}","b":1}}'.encode()
    assert encode_json({"a": text}) == f'{{"a":"{text}"}}'.encode()
