"""A copy of troika with the layers wrapped around every client request taken out.

Why: a workload below its issue 13 target needs, in the closing note, the profile that says
where the rest goes. On the reads and the gateway's transaction 5-14 % of the serving
member's samples fall in the layers each request passes through before and after its work:
the gRPC method counters (``/metrics``), the hot-key count (``/troika/v1/hot``), the
per-tenant rates (QoS), the auth gate and the wait for the member to publish. Making those
layers cheaper is a lever; making them free is the most it can give. This writes that bound
as a tree to measure like any other::

    python -m bench.ablation --commit HEAD --out /tmp/ablated
    cd /tmp/ablated && PYTHONPATH=. python -m troika bench -w v3-range-serializable-gw -c 16 -c 64

The copy is for measuring only: it serves no ``/metrics``, checks no auth, limits no tenant
and counts no hot key. Nothing else changes: the same HTTP server, gateway, gRPC server,
Raft, storage and stores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CLIENT_API: Final = "actors/client_api.py"


@dataclass(frozen=True, slots=True)
class Edit:
    """One replacement in one file of the copy; ``old`` must occur exactly once."""

    path: str
    old: str
    new: str


EDITS: Final = (
    Edit(
        CLIENT_API,
        "    methods = record_methods(usage, gate_methods(member, authorize_methods(member, "
        "metered)))\n"
        "    if wrap_methods is not None:\n"
        "        methods = wrap_methods(methods)\n",
        "    methods = every_method  # ablated: no counters, hot keys, auth, QoS or publish gate\n"
        "    del metered\n",
    ),
    Edit(CLIENT_API, "        v2 = record_v2(usage, v2_api)\n", "        v2 = v2_api  # ablated\n"),
    Edit(
        CLIENT_API,
        "        http = gate_until_published(member, route_client_paths(gateway, troika_paths, "
        "v2))\n",
        "        http = route_client_paths(gateway, troika_paths, v2)  # ablated\n",
    ),
    Edit(
        CLIENT_API,
        "            http if wrap_http is None else wrap_http(http),\n",
        "            http,  # ablated: no /metrics\n",
    ),
)
"""What the ablated copy leaves out, all of it where ``serve_client_api`` composes the
client port's handlers."""


class AblationError(Exception):
    """The tree no longer has the text an edit replaces (the code moved on: update EDITS)."""


def ablate(tree: Path, edits: tuple[Edit, ...] = EDITS) -> None:
    """Apply ``edits`` to the files under ``tree``, all or none.

    Raises:
        AblationError: an edit's text is missing, or found more than once.
    """
    texts: dict[str, str] = {}
    for edit in edits:
        text = texts.get(edit.path)
        if text is None:
            text = (tree / edit.path).read_text()
        found = text.count(edit.old)
        if found != 1:
            raise AblationError(f"{edit.path}: {found} copies of {edit.old.strip()!r}, not one")
        texts[edit.path] = text.replace(edit.old, edit.new)
    for path, text in texts.items():
        (tree / path).write_text(text)


def export(commit: str, out: Path, repository: Path) -> None:
    """A clean export of ``commit`` into ``out`` (which must not exist or be empty)."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise AblationError(f"{out} is not empty")
    archive = subprocess.run(
        ["git", "-C", str(repository), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default="HEAD", help="what to export (default HEAD)")
    parser.add_argument("--out", type=Path, required=True, help="an empty or new directory")
    parser.add_argument("--repository", type=Path, default=Path.cwd(), help="the git checkout")
    args = parser.parse_args(argv)
    try:
        export(args.commit, args.out, args.repository)
        ablate(args.out)
    except AblationError as error:
        print(f"ablation: {error}", file=sys.stderr)
        return 1
    print(f"ablated copy of {args.commit} in {args.out}; run it with PYTHONPATH={args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
