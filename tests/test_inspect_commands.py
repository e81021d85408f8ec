"""``troika inspect``'s pure core: merging the members' hot answers (sums, floors, series)
and usage answers (the most recent member), and the tables and page drawn from them."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from actors.usage import UsageRecorder
from net.inspect_page import hot_page
from storage.usage.sketch import READ, WRITE
from troika.cli import app
from troika.del_prefix import check_plan, planned_seconds, prefix_range_end
from troika.inspect_commands import merge_hot, merge_usage, render_hot, render_usage


def answer_of(records: list[tuple[bytes, int]], capacity: int = 8) -> dict[str, Any]:
    recorder = UsageRecorder(now_s=lambda: 100.0, capacity=capacity)
    for key, times in records:
        for _ in range(times):
            recorder.record(WRITE if key.endswith(b"w") else READ, key, 3)
    return recorder.hot(b"", 1, "1m", 10)


def test_hot_answers_sum_over_members() -> None:
    merged = merge_hot(
        [answer_of([(b"/a/1w", 5), (b"/b/1", 2)]), answer_of([(b"/a/2", 4)]), answer_of([])],
        limit=10,
    )
    items = {item["key"]: item for item in merged["items"]}
    assert (items["/a/"]["count"], items["/a/"]["writes"], items["/a/"]["reads"]) == (9, 5, 4)
    assert items["/b/"]["count"] == 2 and merged["total"] == 11 and merged["members"] == 3
    assert merged["series"][-1] == {"age_minutes": 0, "counts": [9, 2]}
    table = render_hot(merged)
    assert "| /a/" in table and "3 member(s), 11 requests" in table
    assert b"<polyline" in hot_page([merged])


def test_a_full_members_floor_is_added_to_items_it_does_not_hold() -> None:
    crowded = answer_of([(b"/p%d/x" % n, 3) for n in range(4)], capacity=2)
    assert crowded["floor"] >= 3
    merged = merge_hot([crowded, answer_of([(b"/q/x", 1)])], limit=10)
    q = next(item for item in merged["items"] if item["key"] == "/q/")
    assert q["count"] == 1 + crowded["floor"] and q["error"] == crowded["floor"]


def test_usage_from_the_member_at_the_highest_revision() -> None:
    def usage(member: str, revision: int, keys: int) -> dict[str, Any]:
        row = {"prefix": "/a/", "keys": keys, "bytes": 10, "revisions": keys,
               "history_bytes": 10}  # fmt: skip
        return {"prefix": "", "depth": 1, "revision": revision, "member_id": member,
                "rows": [row], "other": {**row, "prefix": "(other)", "revisions": 0},
                "total": row}  # fmt: skip

    merged = merge_usage([usage("a1", 7, 3), usage("b2", 9, 4), usage("c3", 8, 3)])
    assert merged["member_id"] == "b2" and merged["revisions"] == {"a1": 7, "b2": 9, "c3": 8}
    text = render_usage(merged)
    assert "b2 at revision 9" in text and "(total)" in text and "(other)" not in text


def test_del_prefix_refuses_an_empty_prefix_and_unbounded_plans() -> None:
    with pytest.raises(ValueError, match="empty prefix"):
        check_plan(b"", 10, 10.0)
    with pytest.raises(ValueError, match="--batch"):
        check_plan(b"/a/", 0, 10.0)
    with pytest.raises(ValueError, match="--rate"):
        check_plan(b"/a/", 10, 0.0)
    assert planned_seconds(1001, 100, 500.0) == (11, 2.002)
    assert prefix_range_end(b"/a/") == b"/a0" and prefix_range_end(b"\xff") == b"\x00"
    result = CliRunner().invoke(app, ["del-prefix", ""])
    assert result.exit_code == 1 and "refusing an empty prefix" in result.output
