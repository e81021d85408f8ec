"""Coverage-guided fuzzing (atheris, libFuzzer) of the gateway's JSON reader and the HTTP/1.1
request parser; run by hand, not collected by pytest (docs/fuzzing.md).

Usage: python tests/fuzz/atheris_harness.py {gateway|http} [libFuzzer flags]
"""

# The imports are inside the functions on purpose: atheris instruments what is imported inside
# ``atheris.instrument_imports()``.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import sys
from typing import Any


def _gateway_target() -> Any:
    from net.etcdpb.routes import GATEWAY_ROUTES, grpc_path
    from net.v3.gateway import InputError, decode_message
    from net.v3.service import v3_methods
    from tests.net.test_v3_service import FakeV3Backend

    methods = v3_methods(FakeV3Backend())
    types = [
        methods[grpc_path(*route)].request_type
        for route in GATEWAY_ROUTES.values()
        if grpc_path(*route) in methods
    ]

    def test_one(data: bytes) -> None:
        if not data:
            return
        with contextlib.suppress(InputError):
            decode_message(types[data[0] % len(types)], data[1:])

    return test_one


def _http_target() -> Any:
    import trio

    from net.http.server import ServerLimits, _RequestParser

    limits = ServerLimits(request_header_bytes_max=4096, request_body_bytes_max=8192)

    def test_one(data: bytes) -> None:
        async def main() -> None:
            parser = _RequestParser(limits)
            step = 1 + (data[0] % 64) if data else 1
            for start in range(0, len(data), step):
                if parser.rejection is not None:
                    break
                parser.feed(data[start : start + step])
            for request in parser.ready:
                assert request.path.startswith("/") or request.path == "*", request.target

        trio.run(main)

    return test_one


def main() -> None:
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

    name = sys.argv[1] if len(sys.argv) > 1 else ""
    targets = {"gateway": _gateway_target, "http": _http_target}
    if name not in targets:
        raise SystemExit(__doc__)
    with atheris.instrument_imports():
        test_one = targets[name]()
    atheris.Setup([sys.argv[0], *sys.argv[2:]], test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
