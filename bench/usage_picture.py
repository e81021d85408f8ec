"""The picture in docs/beyond-etcd.md: 15 minutes of a shifting workload on three members,
counted by three real recorders (virtual clock), merged as ``troika inspect hot`` merges them
and drawn as ``inspect hot --png`` and ``--html`` draw them.

``python -m bench.usage_picture docs/hot-prefixes.png docs/hot-prefixes.html``. The workload
(seeded): ``/registry/pods/`` steady, ``/registry/events/`` a burst between minutes 5 and 9
over ever-new keys, ``/tenants/a/`` growing, ``/tenants/b/`` light; requests go to a member at
random, as clients spread over the endpoints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from random import Random

from actors.usage import UsageRecorder
from net.inspect_page import hot_page
from storage.usage.sketch import EVENT, READ, WRITE
from troika.inspect_commands import draw_png, merge_hot, render_hot

MINUTES = 15
REQUESTS_PER_MINUTE = 3000


def rates(minute: int) -> dict[bytes, float]:
    """Weights of each prefix in ``minute``."""
    return {
        b"/registry/pods/": 1.0,
        b"/registry/events/": 3.0 if 5 <= minute < 9 else 0.1,
        b"/tenants/a/": 0.2 + 0.15 * minute,
        b"/tenants/b/": 0.3,
    }


def run(seed: int = 16) -> dict[str, object]:
    """The merged hot answer (depth 2) at the end of the workload."""
    rng = Random(seed)
    clock = [0.0]
    members = [UsageRecorder(now_s=lambda: clock[0]) for _ in range(3)]
    serial = 0
    for minute in range(MINUTES):
        weights = rates(minute)
        prefixes = list(weights)
        for step in range(REQUESTS_PER_MINUTE):
            clock[0] = minute * 60 + step * 60 / REQUESTS_PER_MINUTE
            prefix = rng.choices(prefixes, [weights[p] for p in prefixes])[0]
            serial += 1
            key = prefix + (b"e%d" % serial if b"events" in prefix else b"k%d" % rng.randrange(50))
            kind = rng.choice((READ, READ, WRITE, EVENT))
            rng.choice(members).record(kind, key, rng.randrange(50, 500))
    clock[0] = MINUTES * 60 - 1
    answers = [member.hot(b"", 2, "15m", 8) for member in members]
    return merge_hot(answers, 8)


def main() -> None:
    png, page = (Path(arg) for arg in sys.argv[1:3])
    answer = run()
    draw_png(answer, png)
    page.write_bytes(hot_page([answer], "troika: hot prefixes (3 members merged)"))
    print(render_hot(answer))


if __name__ == "__main__":
    main()
