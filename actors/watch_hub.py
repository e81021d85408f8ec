"""The watch hub's shell: its catch-up task and each stream's progress interval.

The hub (``storage.mvcc.watch``) belongs to the apply actor, which publishes each applied
batch's events to it. Watchers that fell behind (a watch from a past revision, a stream too
slow to take its responses, every watcher after a snapshot install) are caught up here, one
bounded ``WatchHub.catch_up`` round at a time with a checkpoint between rounds, so the apply
stage and the client streams keep running; when a round finds nothing it can do, the task
sleeps until the hub wakes it (a watcher became unsynced, a stream took responses). Nothing
here waits on a clock.
"""

from __future__ import annotations

from random import Random
from typing import Final

import trio

from storage.mvcc.watch import WatchHub

PROGRESS_NOTIFY_INTERVAL_S: Final = 600.0
"""etcd's default ``--experimental-watch-progress-notify-interval`` (10 minutes)."""

PROGRESS_NOTIFY_INTERVAL_MIN_S: Final = 0.1
"""etcd raises a shorter interval to this (``minWatchProgressInterval``)."""

PROGRESS_JITTER_FRACTION: Final = 0.1
"""Each stream's interval is longer by up to this fraction, drawn from the member's generator,
so that streams opened together do not all report at once (as etcd)."""


class WatchHubShell:
    """Runs the hub's catch-up rounds; chooses each stream's progress interval.

    Args:
        hub: the apply actor's hub.
        progress_interval_s: the progress notify interval (raised to etcd's minimum).
        rng: the member's seeded generator, for the jitter.
    """

    def __init__(self, hub: WatchHub, *, progress_interval_s: float, rng: Random) -> None:
        self.hub = hub
        self.progress_interval_s = max(progress_interval_s, PROGRESS_NOTIFY_INTERVAL_MIN_S)
        self._rng = rng
        self._work = trio.Event()
        hub.wake = self._wake

    def _wake(self) -> None:
        self._work.set()

    async def run(self) -> None:
        """Catch watchers up until cancelled."""
        while True:
            self._work = trio.Event()
            if self.hub.catch_up():
                await trio.lowlevel.checkpoint()
                continue
            await self._work.wait()

    def stream_progress_interval_s(self) -> float:
        """A new stream's progress interval, with its jitter."""
        jitter = self._rng.random() * PROGRESS_JITTER_FRACTION
        return self.progress_interval_s * (1 + jitter)
