"""The member as the Watch RPC sees it: ``net.v3.watch_service.WatchBackend`` over
``actors.member`` (its watch hub, in ``actors.watch_hub``)."""

from __future__ import annotations

from collections.abc import Callable

from actors.api_backend import MemberView
from storage.mvcc.watch import WatchStream


class MemberWatchBackend(MemberView):
    """Implements ``net.v3.watch_service.WatchBackend`` for one member."""

    def open_watch_stream(self, wake: Callable[[], None]) -> WatchStream:
        return self.member.watch_hub.hub.open_stream(wake)

    def watch_progress_interval_s(self) -> float:
        return self.member.watch_hub.stream_progress_interval_s()
