"""Regenerate the protobuf modules of this package from its .proto files.

The .proto files are etcd 3.4's own message and service definitions
(api/etcdserverpb, api/mvccpb, api/authpb, v3lock, v3election), kept without
comments and without the gogoproto and grpc-gateway options (the gateway's
routes are in ``net/etcdpb/routes.py``); field numbers, names and types are
unchanged, so the wire format is etcd's. ``raft_internal.proto`` is etcd's log
entry union without the v2 request (troika logs v2 requests its own way).

Run from the repository root after changing a .proto file:

    pip install -e '.[proto]'
    python net/etcdpb/regenerate.py

It writes ``*_pb2.py`` (protoc's Python output) and ``*_pb2.pyi`` (typed
stubs from mypy-protobuf) beside each .proto file; both are committed.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent
ROOT = PACKAGE.parent.parent


def main() -> int:
    """Run protoc (from grpcio-tools) over every .proto file of the package."""
    protos = sorted(path.relative_to(ROOT).as_posix() for path in PACKAGE.glob("*.proto"))
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={pathlib.Path(sys.executable).parent / 'protoc-gen-mypy'}",
        f"--proto_path={ROOT}",
        f"--python_out={ROOT}",
        f"--mypy_out={ROOT}",
        *protos,
    ]
    print(" ".join(command))
    return subprocess.run(command, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
