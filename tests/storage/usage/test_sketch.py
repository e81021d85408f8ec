"""The space-saving sketch: its bounds on a skewed stream, its memory bound with many distinct
keys, merging, and a planted bug (a sketch that forgets the evicted count) caught."""

from __future__ import annotations

from collections import Counter
from random import Random

from storage.usage.sketch import READ, WRITE, Item, SpaceSaving, merge, merge_sketches


def zipf_stream(length: int, distinct: int, seed: int, exponent: float = 1.2) -> list[bytes]:
    """``length`` keys drawn from ``distinct`` with Zipf weights (rank ** -exponent)."""
    rng = Random(seed)
    keys = [b"/k/%d" % rank for rank in range(distinct)]
    weights = [1 / (rank + 1) ** exponent for rank in range(distinct)]
    return rng.choices(keys, weights, k=length)


def check_bounds(sketch: SpaceSaving, truth: Counter[bytes], capacity: int) -> None:
    """Space-saving's guarantees: every count brackets the truth, the error is at most n/k,
    every key above n/k is monitored."""
    total = sum(truth.values())
    monitored = {item.key: item for item in sketch.items()}
    for item in monitored.values():
        assert item.count - item.error <= truth[item.key] <= item.count, item
        assert item.error <= total / capacity
    for key, count in truth.items():
        if count > total / capacity:
            assert key in monitored, (key, count)


def test_skewed_stream_within_the_bounds_and_top_ten_exact() -> None:
    stream = zipf_stream(50_000, 20_000, seed=1)
    sketch = SpaceSaving(100)
    for key in stream:
        sketch.add(key, READ, 10)
    truth = Counter(stream)
    check_bounds(sketch, truth, 100)
    assert [item.key for item in sketch.top(10)] == [key for key, _ in truth.most_common(10)]
    assert sketch.total == 50_000 and len(sketch) == 100


def test_memory_is_bounded_whatever_the_number_of_distinct_keys() -> None:
    sketch = SpaceSaving(64)
    for number in range(200_000):  # every key distinct: the worst case
        sketch.add(b"/unique/%d" % number, WRITE, 1)
        assert sketch.memory_entries() <= 2 * 64
    assert len(sketch) == 64 and sketch.floor() <= 200_000 / 64 + 1


def test_kinds_and_bytes_are_counted_per_item() -> None:
    sketch = SpaceSaving(4)
    sketch.add(b"a", READ, 10)
    sketch.add(b"a", WRITE, 5)
    (item,) = sketch.items()
    assert item == Item(b"a", 2, 0, 1, 1, 0, 15)
    assert Item.from_json(item.to_json()) == item
    odd = Item(b"\xff/x", 1, 0, 1, 0, 0, 1)
    assert Item.from_json(odd.to_json()) == odd  # bytes that are not UTF-8 survive JSON


def test_merged_sketches_keep_the_bounds_of_the_union() -> None:
    streams = [zipf_stream(20_000, 5_000, seed=seed) for seed in (2, 3, 4)]
    sketches = []
    for stream in streams:
        sketch = SpaceSaving(50)
        for key in stream:
            sketch.add(key, READ, 1)
        sketches.append(sketch)
    merged = merge_sketches(sketches, 50)
    truth = Counter(key for stream in streams for key in stream)
    check_bounds(merged, truth, 50)
    assert merged.total == 60_000
    assert merged.top(1)[0].key == truth.most_common(1)[0][0]


def test_an_item_absent_from_a_full_part_gets_its_floor() -> None:
    items, floor = merge([([Item(b"a", 10, 0, 10, 0, 0, 0)], 3), ([], 4)], capacity=5)
    assert items == [Item(b"a", 14, 4, 10, 0, 0, 0)] and floor == 7


def test_planted_bug_an_evicted_count_not_inherited_breaks_the_bounds() -> None:
    class Forgetful(SpaceSaving):
        def _monitor(self, key: bytes, kind: int, size_bytes: int) -> None:
            super()._monitor(key, kind, size_bytes)
            entry = self._entries[key]
            entry[0], entry[1] = 1, 0  # the bug: a newcomer starts from zero

    stream = zipf_stream(20_000, 5_000, seed=5)
    sketch = Forgetful(20)
    for key in stream:
        sketch.add(key, READ, 1)
    truth = Counter(stream)
    try:
        check_bounds(sketch, truth, 20)
    except AssertionError:
        return
    raise AssertionError("the checker missed the planted bug")
