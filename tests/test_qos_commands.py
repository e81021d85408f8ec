"""``troika qos``'s pure parts: the ``--leases-max`` flag reaches the set body, and the table
shows the limit and the leases each quota tenant holds."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from troika import qos_commands
from troika.qos_commands import qos_app, render


def test_set_sends_leases_max(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(qos_commands, "_run", lambda *args: sent.append(args))
    result = CliRunner().invoke(qos_app, ["set", "/a/", "--leases-max", "3", "--keys-max", "9"])
    assert result.exit_code == 0, result.output
    ((_, method, path, body, wanted),) = sent
    assert (method, path, wanted) == ("POST", "/troika/v1/qos/set", "/a/")
    assert body["prefix"] == "/a/" and body["leases_max"] == 3 and body["keys_max"] == 9


def test_render_shows_the_lease_limit_and_count() -> None:
    answer = {
        "tenants": [{"prefix": "/a/", "leases_max": 3}, {"role": "r", "watches_max": 2}],
        "usage": {"/a/": {"keys": 4, "stored_bytes": 20, "leases": 2}},
    }
    lines = render(answer).splitlines()  # rule, titles, rule, rows..., rule
    header, prefix_row, role_row = lines[1], lines[3], lines[4]
    cells = [cell.strip() for cell in prefix_row.strip("|").split("|")]
    titles = [cell.strip() for cell in header.strip("|").split("|")]
    row = dict(zip(titles, cells, strict=True))
    assert (row["LEASES_MAX"], row["LEASES"], row["KEYS"]) == ("3", "2", "4")
    roles = dict(zip(titles, [c.strip() for c in role_row.strip("|").split("|")], strict=True))
    assert (roles["TENANT"], roles["WATCHES_MAX"], roles["LEASES"]) == ("role:r", "2", "-")
