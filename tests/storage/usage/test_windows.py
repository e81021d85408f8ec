"""Sliding windows of sketches: traffic leaves each window when it ages out; memory is bounded
by the rings whatever the time span; the series has one point a minute."""

from __future__ import annotations

from storage.usage.sketch import READ
from storage.usage.windows import COARSE_INTERVALS, FINE_PER_COARSE, Windows


def counts(windows: Windows, now_s: float, window_s: float) -> dict[bytes, int]:
    return {item.key: item.count for item in windows.window(now_s, window_s)[0].items()}


def add(windows: Windows, now_s: float, key: bytes, times: int = 1) -> None:
    sketch = windows.frame(now_s)[0]
    for _ in range(times):
        sketch.add(key, READ, 1)


def test_traffic_leaves_the_one_minute_window_but_stays_in_the_longer_ones() -> None:
    windows = Windows(levels=1, capacity=16)
    add(windows, 5.0, b"early", 3)
    add(windows, 125.0, b"late", 2)
    assert counts(windows, 130.0, 60.0) == {b"late": 2}
    assert counts(windows, 130.0, 300.0) == {b"early": 3, b"late": 2}
    assert counts(windows, 130.0, 900.0) == {b"early": 3, b"late": 2}
    assert counts(windows, 400.0, 300.0) == {b"late": 2}  # early is more than 5 minutes old
    assert counts(windows, 500.0, 300.0) == {}
    assert counts(windows, 500.0, 900.0) == {b"early": 3, b"late": 2}
    assert counts(windows, 1000.0, 900.0) == {b"late": 2}
    assert counts(windows, 1100.0, 900.0) == {}


def test_one_minute_window_is_exact_to_ten_seconds() -> None:
    windows = Windows(levels=1, capacity=16)
    for second in range(0, 120, 10):
        add(windows, float(second), b"k%d" % second)
    assert set(counts(windows, 115.0, 60.0)) == {b"k%d" % s for s in range(60, 120, 10)}


def test_frames_are_bounded_by_the_rings() -> None:
    windows = Windows(levels=2, capacity=8)
    for second in range(0, 4 * 3600, 5):
        add(windows, float(second), b"k%d" % second)
        assert windows.frames_held() <= FINE_PER_COARSE + COARSE_INTERVALS + FINE_PER_COARSE + 1


def test_series_one_point_a_minute_oldest_first() -> None:
    windows = Windows(levels=1, capacity=8)
    for minute in range(5):
        add(windows, minute * 60.0 + 1, b"k", minute + 1)
    points = list(windows.series(4 * 60.0 + 30))
    assert [point.age for point in points] == [4, 3, 2, 1, 0]
    assert [next(iter(point.frame[0].items())).count for point in points] == [1, 2, 3, 4, 5]
