"""Sliding windows of sketches: rings of per-interval summaries on a caller's clock.

Why rings: a window that slides needs to forget old traffic, and a sketch cannot subtract.
So traffic goes into the sketch of the current short interval (``FINE_INTERVAL_S``); a
closed interval is kept in the fine ring (the last minute) and merged into the current
minute's roll-up; a closed minute goes into the coarse ring (``COARSE_INTERVALS`` minutes).
A window is the merge of the frames it covers: the last minute from the fine ring, 5 and 15
minutes from the coarse ring. Its edges are exact to one interval (a fine one for 1 m, a
minute for the others). Idle intervals leave no frame, so memory is bounded by the ring
lengths times the levels times the sketch capacity, whatever the traffic.

A frame holds one sketch per level: level 0 counts whole keys, level ``d`` prefixes at depth
``d`` (``storage.usage.prefixes``). Times are seconds on the caller's clock (the member's is
Trio's, virtual in tests and in the simulator); only differences matter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from storage.usage.sketch import SpaceSaving, merge_sketches

FINE_INTERVAL_S: Final = 10.0
FINE_PER_COARSE: Final = 6
COARSE_INTERVAL_S: Final = FINE_INTERVAL_S * FINE_PER_COARSE
COARSE_INTERVALS: Final = 15
WINDOWS_S: Final = {"1m": 60.0, "5m": 300.0, "15m": 900.0}
"""The windows served, by name."""

Frame = tuple[SpaceSaving, ...]
"""One interval's sketches, one per level."""


def new_frame(levels: int, capacity: int) -> Frame:
    """Empty sketches for ``levels`` levels."""
    return tuple(SpaceSaving(capacity) for _ in range(levels))


def merge_frames(frames: list[Frame], levels: int, capacity: int) -> Frame:
    """The level-by-level merge of ``frames``."""
    if not frames:
        return new_frame(levels, capacity)
    return tuple(merge_sketches((f[level] for f in frames), capacity) for level in range(levels))


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """A closed or current interval: its age (intervals back from now) and its frame."""

    age: int
    frame: Frame


class Windows:
    """The rings of one recorder; call :meth:`frame` with the time on every record."""

    def __init__(self, levels: int, capacity: int) -> None:
        assert levels > 0, levels
        self.levels = levels
        self.capacity = capacity
        self._fine: deque[tuple[int, Frame]] = deque(maxlen=FINE_PER_COARSE)
        self._coarse: deque[tuple[int, Frame]] = deque(maxlen=COARSE_INTERVALS)
        self._current_index: int | None = None
        self._current = new_frame(levels, capacity)
        self._minute_index: int | None = None
        self._minute: list[Frame] = []
        """Closed fine frames of the current minute, merged when the minute closes."""

    def frame(self, now_s: float) -> Frame:
        """The frame to count into at ``now_s`` (closing the intervals that ended)."""
        index = int(now_s // FINE_INTERVAL_S)
        if index != self._current_index:
            self._roll(index)
        return self._current

    def _roll(self, index: int) -> None:
        if self._current_index is not None and any(len(s) for s in self._current):
            self._close_fine(self._current_index, self._current)
            self._current = new_frame(self.levels, self.capacity)
        self._current_index = index
        self._close_minute_before(index // FINE_PER_COARSE)

    def _close_fine(self, index: int, frame: Frame) -> None:
        self._fine.append((index, frame))
        minute = index // FINE_PER_COARSE
        self._close_minute_before(minute)
        self._minute_index = minute
        self._minute.append(frame)

    def _close_minute_before(self, minute: int) -> None:
        if self._minute_index is None or self._minute_index >= minute:
            return
        if self._minute:
            merged = merge_frames(self._minute, self.levels, self.capacity)
            self._coarse.append((self._minute_index, merged))
        self._minute = []
        self._minute_index = None

    def window(self, now_s: float, window_s: float) -> Frame:
        """The merge of the frames within ``window_s`` of ``now_s`` (current included)."""
        self.frame(now_s)
        frames = [self._current]
        index = int(now_s // FINE_INTERVAL_S)
        if window_s <= COARSE_INTERVAL_S:
            back = int(window_s // FINE_INTERVAL_S)
            frames += [f for i, f in self._fine if index - i < back]
        else:
            minute = index // FINE_PER_COARSE
            back = int(window_s // COARSE_INTERVAL_S)
            frames += self._minute
            frames += [f for i, f in self._coarse if minute - i < back]
        return merge_frames(frames, self.levels, self.capacity)

    def series(self, now_s: float) -> Iterator[SeriesPoint]:
        """One point a minute, oldest first, for the last ``COARSE_INTERVALS`` minutes (the
        current minute last, closed fine frames and the current one merged)."""
        self.frame(now_s)
        minute = int(now_s // COARSE_INTERVAL_S)
        for index, frame in self._coarse:
            if minute - index < COARSE_INTERVALS:
                yield SeriesPoint(minute - index, frame)
        current = merge_frames([*self._minute, self._current], self.levels, self.capacity)
        yield SeriesPoint(0, current)

    def frames_held(self) -> int:
        """Frames in memory (for the memory bound's tests)."""
        return len(self._fine) + len(self._coarse) + len(self._minute) + 1
