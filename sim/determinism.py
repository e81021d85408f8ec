"""Deterministic Trio runs: the one place that reaches into Trio's private scheduler.

Theory of operation
-------------------

Trio runs the tasks that became runnable together as one *batch*, in an order it randomizes on
purpose (trio/_core/_run.py, ``unrolled_run``): normally it reverses the batch when
``_r.random() < 0.5``, ``_r`` being a module-level ``random.Random`` seeded from the OS. When
the module flag ``_ALLOW_DETERMINISTIC_SCHEDULING`` is true (Trio's Hypothesis plugin sets it),
it instead sorts the batch by task creation (``Task._counter``) and shuffles it with ``_r``.
:func:`deterministic_scheduling` sets that flag and seeds ``_r`` with the run's seed, so the
interleaving of tasks is a function of the seed; :func:`run_deterministic` runs a function that
way on a fresh ``MockClock`` (virtual time, autojump), so time is virtual too. Both names are
private, so this module checks Trio's version against the one pyproject.toml pins and fails
loudly on any other: a new Trio must be read again before it is trusted.

What else we found in Trio 0.35.0's run loop under a MockClock, and what it means:

- The deadline heap breaks ties by ``id(cancel_scope)`` (``Deadlines.add``), an address that
  differs between runs. Harmless here: all scopes whose deadlines passed are expired in one
  ``Deadlines.expire`` call before the next batch is formed, and the batch is sorted by task
  creation before it is shuffled, so the order they were woken in never shows.
- The comment above the shuffle also names "the non-deterministic ordering of
  task._notify_queues"; that attribute no longer exists in 0.35.0. What is left of the same
  kind (cancellation walks sets of tasks and child cancel statuses, ``wait_all_tasks_blocked``
  keys waiters by ``id(task)``, ``runner.tasks`` and nursery children are sets) only changes
  the order tasks are rescheduled in, which the sort erases, or removes entries (abort
  callbacks), where order does not matter.
- Task ``_counter`` comes from one process-wide ``itertools.count``: a second run starts at a
  higher number, but only the relative order of tasks is used, which a deterministic run
  reproduces.
- ``MockClock`` reads the real clock only when its ``rate`` is not 0 (we never set one);
  ``SystemClock``'s random offset is not used under a MockClock.
- Async generators that are garbage collected unfinished are closed by a system task that
  Trio spawns from the garbage collector's finalizer hook, and any ``__del__`` or weakref
  callback runs when the collector gets to it. Automatic collection runs when allocation
  counts cross a threshold, and those counts depend on everything the process allocated before
  the run: so *when* a cyclic garbage finalizer runs is not a function of the seed. Fixed here
  from outside: :func:`run_deterministic` collects before the run, freezes what exists
  (``gc.freeze``: objects from before the run are never collected during it), turns automatic
  collection off, and collects at fixed points of the run instead (every
  ``COLLECT_EVERY_ITERATIONS`` passes of the run loop, from a Trio instrument). Everything is
  restored afterwards. The fixed points are generational, as the automatic collector is: the
  young generation every time, the middle one every ``OLDER_GENERATION_EVERY`` times, a full
  collection every ``OLDER_GENERATION_EVERY`` squared; a full collection walks everything the
  run built (stores, logs, the history), and doing one at every fixed point was a sixth of a
  run's time. Which objects a generational collection sees depends only on what the run
  allocated since its start, so the schedule is as deterministic as before.

Speed (the simulated path touches no real OS): under ``MockClock(autojump_threshold=0)`` every
pass of the run loop asks the I/O manager for events with a zero timeout, an ``epoll_wait``
system call per pass that can only ever return the wakeup socket Trio writes to when something
calls ``run_sync_soon`` (the garbage collector's async generator finalizer, a signal). The run
here uses an I/O manager that skips that call while Trio's entry queue is empty
(:class:`_NoIdlePollIOManager`), and a ``MockClock`` whose ``current_time`` does not read the
real clock (:func:`virtual_clock`; the run loop asks the time several times per pass), and
whose autojump also fires :class:`Timers`, wake-ups at virtual times that cost no cancel scope
(the simulated network's arrivals use them). Task steps are counted without a hook per step
(:class:`TaskSteps`).
- Trio's end-of-run finalization of leftover async generators walks a set (order by
  address); it runs after the run's result is decided, so it cannot change a trace taken
  during the run.

What no helper can fix from inside a process: ``str``/``bytes`` hashes are salted per process
(``PYTHONHASHSEED``), so code that iterates a set of strings behaves the same in two runs of
one process and differently in another process. Such code must sort; the simulator's
end-to-end test runs a scenario in processes with different hash seeds to catch it.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final, TypeVar, TypeVarTuple

import trio
import trio._core._run as trio_run
from trio._core._mock_clock import MockClock

TRIO_VERSION_PINNED: Final = "0.35.0"
"""The Trio whose private scheduler this module was written against (pinned in pyproject)."""
COLLECT_EVERY_ITERATIONS: Final = 1000
"""Run-loop passes between two garbage collections in a deterministic run."""
OLDER_GENERATION_EVERY: Final = 10
"""Every this many collections of a generation, the next older one is collected too."""

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class UnsupportedTrioVersion(RuntimeError):
    """Trio is not the version whose private scheduler this module knows."""


def check_trio_version(version: str | None = None) -> None:
    """Fail unless Trio (or ``version``) is the pinned one and has the private names we use.

    Raises:
        UnsupportedTrioVersion: another version, or the names are missing.
    """
    found = trio.__version__ if version is None else version
    if found != TRIO_VERSION_PINNED:
        raise UnsupportedTrioVersion(
            f"deterministic runs need trio=={TRIO_VERSION_PINNED} (its private scheduler "
            f"state is patched by sim.determinism), found trio {found}: read trio/_core/_run.py "
            "again, update sim/determinism.py and the pin in pyproject.toml"
        )
    flag = getattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", None)
    generator = getattr(trio_run, "_r", None)
    if not isinstance(flag, bool) or not hasattr(generator, "seed"):
        raise UnsupportedTrioVersion(
            "trio._core._run no longer has _ALLOW_DETERMINISTIC_SCHEDULING and _r"
        )


@contextlib.contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Within the block, Trio runs order each batch of runnable tasks by ``seed`` alone.

    Seeds Trio's scheduler generator when entered; restores the flag and the generator's
    state when left.

    Raises:
        UnsupportedTrioVersion: see ``check_trio_version``.
    """
    check_trio_version()
    if not isinstance(seed, int):
        raise TypeError(f"the seed must be an int, not {type(seed).__name__}")
    saved_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_state = trio_run._r.getstate()
    setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010 (a Final name)
    trio_run._r.seed(seed)
    try:
        yield
    finally:
        setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", saved_flag)  # noqa: B010
        trio_run._r.setstate(saved_state)


class _CollectAtFixedPoints(trio.abc.Instrument):
    """Collects garbage every ``every_iterations`` passes of the run loop: the young
    generation each time, older ones every ``OLDER_GENERATION_EVERY``-th time per level."""

    def __init__(self, every_iterations: int) -> None:
        self._every_iterations = every_iterations
        self._iterations = 0
        self._collections = 0

    def before_io_wait(self, timeout: float) -> None:
        self._iterations += 1
        if self._iterations % self._every_iterations:
            return
        self._collections += 1
        generation = 0
        while generation < 2 and not self._collections % OLDER_GENERATION_EVERY ** (generation + 1):
            generation += 1
        gc.collect(generation)


class TaskSteps(trio.abc.Instrument):
    """Counts task steps (every time a task runs until its next checkpoint), a deterministic
    measure of work, without a hook per step (that hook cost more than the counting): Trio
    counts each task's ``_schedule_points``; a task's last step, the one it exits in, is not
    counted there, so each exit adds its count plus one.

    ``count()`` is exact between steps (a run-loop hook), from inside a task it leaves out
    the step in progress, and after the run it is the run's total.
    """

    def __init__(self) -> None:
        self._exited_steps = 0

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self._exited_steps += task._schedule_points + 1

    def count(self) -> int:
        """Task steps so far."""
        runner = getattr(trio_run.GLOBAL_RUN_CONTEXT, "runner", None)
        live = 0 if runner is None else sum(task._schedule_points for task in runner.tasks)
        return self._exited_steps + live


class Timers:
    """Callbacks at virtual times, run when the clock jumps to them: a wake-up without a
    cancel scope (a scope that expires costs a heap entry, a ``Cancelled`` raised through
    the task and caught again; the simulated network needs one per segment in flight).

    Only a ``virtual_clock()`` has them (``timers_of_current_clock``). They fire when Trio
    autojumps the clock: every task blocked, time moves to the earliest Trio deadline or
    timer, and every timer due by then runs, in (time, registration) order. A callback may
    reschedule tasks (unpark them); it must not block.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[float], None]]] = []
        self._order = itertools.count()

    def call_at(self, at_s: float, callback: Callable[[float], None]) -> None:
        """Run ``callback(at_s)`` once the clock has reached ``at_s`` (a finite time)."""
        heapq.heappush(self._heap, (at_s, next(self._order), callback))

    def next_s(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def fire_due(self, now_s: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now_s:
            at_s, _, callback = heapq.heappop(heap)
            callback(at_s)


def timers_of_current_clock() -> Timers | None:
    """The running clock's ``Timers``, or None (a plain ``MockClock``, the system clock)."""
    timers = getattr(trio.lowlevel.current_clock(), "sim_timers", None)
    return timers if isinstance(timers, Timers) else None


def virtual_clock() -> MockClock:
    """A ``MockClock(autojump_threshold=0)`` at rate 0 that answers the time without reading
    the real clock (``MockClock.current_time`` reads it and multiplies by the rate, 0), and
    that has ``Timers``: its autojump goes to the earlier of Trio's next deadline and the
    next timer, lands on it exactly, and fires the timers due. Its rate must stay 0
    (``MockClock`` cannot be subclassed; the methods are replaced on the instance)."""
    clock = MockClock(autojump_threshold=0)
    timers = Timers()

    def current_time() -> float:
        return clock._virtual_base

    def autojump() -> None:
        runner = trio_run.GLOBAL_RUN_CONTEXT.runner
        target_s = min(runner.deadlines.next_deadline(), timers.next_s())
        if clock._virtual_base < target_s < math.inf:
            clock._virtual_base = target_s
        timers.fire_due(clock._virtual_base)

    setattr(clock, "current_time", current_time)  # noqa: B010 (a method, on this instance)
    setattr(clock, "_autojump", autojump)  # noqa: B010
    setattr(clock, "sim_timers", timers)  # noqa: B010
    return clock


_TRIO_IO_MANAGER: Any = getattr(trio_run, "TheIOManager")  # noqa: B009 (not exported)


class _NoIdlePollIOManager(_TRIO_IO_MANAGER):  # type: ignore[misc]  # per platform
    """Trio's I/O manager (epoll on Linux), but a zero-timeout wait with nothing in Trio's
    entry queue makes no system call: no simulated task waits on a real file descriptor, and
    the only descriptor Trio registers itself, the entry queue's wakeup socket, is written
    only when something is queued (``run_sync_soon``), which this checks first. A wait with a
    timeout (never, under an autojumping clock) polls as usual."""

    def get_events(self, timeout: float) -> Any:
        if timeout <= 0:
            entry_queue = trio_run.GLOBAL_RUN_CONTEXT.runner.entry_queue
            if not (entry_queue.queue or entry_queue.idempotent_queue):
                return []
        return super().get_events(timeout)


@contextlib.contextmanager
def _no_idle_polling() -> Iterator[None]:
    """Within the block, new Trio runs use ``_NoIdlePollIOManager``."""
    setattr(trio_run, "TheIOManager", _NoIdlePollIOManager)  # noqa: B010 (not exported)
    try:
        yield
    finally:
        setattr(trio_run, "TheIOManager", _TRIO_IO_MANAGER)  # noqa: B010


@contextlib.contextmanager
def _garbage_collected_at_fixed_points() -> Iterator[None]:
    """Automatic collection off, what exists frozen; restored when left."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def run_deterministic(
    async_fn: Callable[[*Ts], Awaitable[T]],
    seed: int,
    *args: *Ts,
    clock: MockClock | None = None,
    collect_every_iterations: int = COLLECT_EVERY_ITERATIONS,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> T:
    """``trio.run(async_fn, *args)`` with the scheduler seeded by ``seed``, in virtual time.

    Args:
        async_fn, args: what to run.
        seed: decides every scheduling choice Trio makes.
        clock: the run's clock; by default ``virtual_clock()``, a
            ``MockClock(autojump_threshold=0)``: time jumps to the next deadline whenever
            every task is blocked.
        collect_every_iterations: garbage is collected every this many passes of the run
            loop (and never otherwise), so that finalizers run at the same points every run.
        instruments: more Trio instruments (a watchdog, say); they must be deterministic.

    Raises:
        UnsupportedTrioVersion: see ``check_trio_version``.
        Whatever ``async_fn`` raises.
    """
    if collect_every_iterations < 1:
        raise ValueError("collect_every_iterations must be >= 1")
    if clock is None:
        clock = virtual_clock()
    with (
        deterministic_scheduling(seed),
        _garbage_collected_at_fixed_points(),
        _no_idle_polling(),
    ):
        return trio.run(
            async_fn,
            *args,
            clock=clock,
            instruments=[_CollectAtFixedPoints(collect_every_iterations), *instruments],
        )


__all__ = [
    "COLLECT_EVERY_ITERATIONS",
    "OLDER_GENERATION_EVERY",
    "TRIO_VERSION_PINNED",
    "TaskSteps",
    "Timers",
    "UnsupportedTrioVersion",
    "check_trio_version",
    "deterministic_scheduling",
    "run_deterministic",
    "timers_of_current_clock",
    "virtual_clock",
]
