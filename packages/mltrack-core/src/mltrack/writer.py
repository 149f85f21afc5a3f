"""The writer: log calls append to a buffer and return; a flusher hands batches on.

The calling thread pays for a dict lookup, a few checks and one ``list.extend``: most log
calls take no lock (see :meth:`Writer.lanes`). A sealer thread packs the buffer into
columns every half ``flush_interval`` and a flusher thread hands the operations, in order,
to a *sink*: :class:`HookSink` calls the write hooks in this process; a process sink ships
them to a writer process that does the same there. Memory is bounded: when
``max_buffered_points`` are waiting, log calls wait for the flusher (backpressure), they
never drop points.
"""

from __future__ import annotations

import errno
import logging
import queue
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs

from mltrack.errors import BackendError, causes
from mltrack.models import Context, ExperimentStatus, MetricBatch

__all__ = ["UNDELIVERED_TAG", "HookSink", "ObservedSink", "Op", "Sink", "Writer", "WriterStats", "crashed_op"]

log = logging.getLogger("mltrack")


@attrs.define
class WriterStats:
    """What the writer did, for ``health_check()``: failures are counted, never hidden."""

    points_delivered: int = 0
    points_undelivered: int = 0
    write_errors: int = 0
    retries: int = 0
    writer_restarts: int = 0
    """Writer processes started anew after one died (what it held was sent again, not lost)."""
    points_waiting: int = 0
    """Points a store did not take yet, kept in the spool and retried until it does (not lost)."""
    last_error: str | None = None
    errors_by_target: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class Op:
    """One write operation for the sink: a hook name and its keyword arguments."""

    hook: str
    kwargs: Mapping[str, Any]
    points: int = 0
    seq: int = 0
    """The writer's sequence number, once spooled (0: not spooled); the spool's ack file names it."""


def crashed_op(run_id: str, finals: Mapping[str, tuple[int, float]], end_time: datetime) -> Op:
    """Finish ``run_id`` CRASHED with its last values (``finals``: metric key -> (step, value))."""
    return Op(
        "mltrack_finish_run",
        {
            "run_id": run_id,
            "status": ExperimentStatus.CRASHED,
            "end_time": end_time,
            "final_metrics": {k: v for k, (_, v) in finals.items()},
        },
    )


class Sink(Protocol):
    """Where the writer hands operations, in order."""

    def deliver(self, op: Op) -> None:
        """Store ``op`` (retrying as it sees fit), or ship it to whoever stores it; raise only in strict mode."""

    def barrier(self) -> None:
        """Return once every operation delivered so far is stored."""

    def close(self) -> None:
        """Release resources after the last ``deliver``."""


def _pack(
    keys: Sequence[tuple[str, str, Context]],
    kidx: list[int],
    steps: list[int],
    values: list[float],
    ts: list[float],
) -> list[tuple[str, MetricBatch]]:
    """Columns taken from the stream (global key ids) as one compact :class:`MetricBatch` per run.

    Each batch lists only its own keys. The common cases (one metric; several metrics of one
    run) stay in C loops: the calling thread shares the GIL with this work.
    """
    used = set(kidx)
    if len(used) == 1:
        run_id, name, ctx = keys[kidx[0]]
        return [
            (
                run_id,
                MetricBatch(
                    [(name, ctx)],
                    array("I", bytes(4 * len(kidx))),
                    array("q", steps),
                    array("d", values),
                    array("d", ts),
                ),
            )
        ]
    order = sorted(used)
    run_ids = {keys[k][0] for k in order}
    if len(run_ids) == 1:
        remap = {k: i for i, k in enumerate(order)}
        packed = MetricBatch(
            [(keys[k][1], keys[k][2]) for k in order],
            array("I", map(remap.__getitem__, kidx)),
            array("q", steps),
            array("d", values),
            array("d", ts),
        )
        return [(keys[order[0]][0], packed)]
    out = []
    for run_id in sorted(run_ids):
        mine = [k for k in order if keys[k][0] == run_id]
        remap = {k: i for i, k in enumerate(mine)}
        rows = [r for r, k in enumerate(kidx) if k in remap]
        out.append(
            (
                run_id,
                MetricBatch(
                    [(keys[k][1], keys[k][2]) for k in mine],
                    array("I", (remap[kidx[r]] for r in rows)),
                    array("q", (steps[r] for r in rows)),
                    array("d", (values[r] for r in rows)),
                    array("d", (ts[r] for r in rows)),
                ),
            )
        )
    return out


FAST_LANES = getattr(sys, "_is_gil_enabled", lambda: True)()
"""Whether log calls may skip the writer's lock (see :meth:`Writer.lanes`): they rely on the GIL."""


MAX_BACKOFF = 1.0
"""Longest pause between two retries of one operation (seconds)."""

UNDELIVERED_TAG = "mltrack:undelivered-points"
"""A finished run some of whose points a backend did not store is tagged ``<this>=<count>``."""


class HookTimeout(BackendError):
    """A plugin's hook did not return within ``hook_timeout``; the plugin is cut off."""


class _TargetThread:
    """Runs one target's hook calls on a thread of its own, so a hung plugin can be left behind.

    Every call of a target happens on the same thread (stores that care about thread
    affinity see one thread), and ``call`` waits at most ``timeout`` seconds.
    """

    def __init__(self, name: str) -> None:
        self._inbox: queue.SimpleQueue[tuple[Callable[[], object], list[Any], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=f"mltrack-hook-{name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            fn, box, done = self._inbox.get()
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

    def call(self, fn: Callable[[], object], timeout: float) -> object:
        box: list[Any] = []
        done = threading.Event()
        self._inbox.put((fn, box, done))
        if not done.wait(timeout):
            raise HookTimeout(f"no answer within {timeout:g} s")
        ok, value = box[0]
        if not ok:
            raise value
        return value


class HookSink:
    """Delivers operations to each target (each backend, each observer) on its own, with retries.

    A target that raises is retried with backoff, then counted; one that hangs past
    ``hook_timeout`` is cut off for good (named in the log and in ``health_check()``), so
    neither stops the other targets or the training loop.
    """

    def __init__(
        self,
        targets: Sequence[Any] | Callable[[], Sequence[Any]],
        stats: WriterStats,
        *,
        counts_points: bool = True,
        strict: bool = False,
        max_retries: int = 4,
        backoff: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        hook_timeout: float | None = None,
        retry_window: float = 0.0,
    ) -> None:
        self._targets = targets
        """The targets, or a function answering them anew for each operation (observers come and go)."""
        self._counts_points = counts_points
        """False for a sink of observers only: points are counted where the backends store them."""
        self._stats = stats
        self._strict = strict
        self._max_retries = max_retries
        self._backoff = backoff
        self._sleep = sleep
        self._timeout = hook_timeout
        self._threads: dict[str, _TargetThread] = {}
        self._hung: set[str] = set()
        self._told: set[str] = set()  # broken targets already logged once
        self._undelivered_by_run: dict[str, int] = {}  # points a backend did not store, per open run
        self._retry_window = retry_window
        self._down: set[str] = set()  # targets that stayed unreachable for a whole retry window
        self.delivered_all = True
        """Whether every backend took the last operation (an observer's failure loses no stored data)."""
        self.primary_failed = False
        """Whether the primary backend (the first) did not take the last operation for a reason
        that may pass (unreachable, hung, disk full, never started): the spool then keeps it
        waiting. A refusal that will not pass (a path that is a file, a bad value) is counted."""
        self._passing: dict[str, bool] = {}  # target -> whether its last failure may pass

    def _call(self, target: Any, op: Op) -> None:
        if self._timeout is None:
            target.call(op.hook, **op.kwargs)
            return
        thread = self._threads.get(target.name)
        if thread is None:
            thread = self._threads[target.name] = _TargetThread(target.name)
        thread.call(lambda: target.call(op.hook, **op.kwargs), self._timeout)

    def deliver(self, op: Op) -> None:
        if op.hook == "mltrack_finish_run":
            lost = self._undelivered_by_run.pop(op.kwargs["run_id"], 0)
            if lost:  # the run itself says what it is missing, not only health_check()
                tag = f"{UNDELIVERED_TAG}={lost}"
                self.deliver(Op("mltrack_set_tags", {"run_id": op.kwargs["run_id"], "tags": (tag,)}))
        failures: list[str] = []
        targets = self._targets() if callable(self._targets) else self._targets
        for target in targets:
            if target.name in self._hung:
                failures.append(target.name)
                self._record_failure(target, op, HookTimeout("cut off after an earlier hang"), quiet=True)
                continue
            broken = getattr(target, "broken", None)
            if broken is not None:  # it never started: counting, not retrying, is all there is to do
                if self._strict:
                    raise BackendError(broken)
                failures.append(target.name)
                self._record_failure(target, op, BackendError(broken), quiet=target.name in self._told)
                self._told.add(target.name)
                continue
            if not self._deliver_to(target, op):
                failures.append(target.name)
        backends = [t.name for t in targets if getattr(t, "is_backend", True)]
        self.delivered_all = not any(name in failures for name in backends)
        self.primary_failed = (
            bool(backends) and backends[0] in failures and self._passing.get(backends[0], True)
        )
        if self._counts_points and self.delivered_all:
            self._stats.points_delivered += op.points

    def redeliver(self, op: Op) -> bool:
        """Deliver again an operation the primary backend did not take: True once it took it.

        A retry that fails again is not counted as a new failure; one that succeeds takes
        back the run's count of missing points (the run is then not tagged as missing them).
        A fan-out secondary that misses it again stays counted from its first miss, as any
        secondary's miss is: it does not hold the primary's data back.
        """
        stats = self._stats
        before = (stats.points_undelivered, stats.write_errors, dict(stats.errors_by_target))
        by_run = dict(self._undelivered_by_run)
        self.deliver(op)
        stats.points_undelivered, stats.write_errors, stats.errors_by_target = before
        if self.primary_failed:
            self._undelivered_by_run = by_run
            return False
        run_id = op.kwargs.get("run_id")
        if op.points and run_id in self._undelivered_by_run:
            left = self._undelivered_by_run[run_id] - op.points
            if left > 0:
                self._undelivered_by_run[run_id] = left
            else:
                del self._undelivered_by_run[run_id]
        return True

    def _deliver_to(self, target: Any, op: Op) -> bool:
        """Call one target, retrying with backoff; False (counted) if it never took ``op``.

        Errors are retried ``max_retries`` times. A connection-type error (an ``OSError``, or an
        error raised from one: a server restarting, a network blip) is retried on for up to
        ``retry_window`` seconds, so an outage that short loses nothing; a target that stays
        down that long is then marked down, and later operations get the quick retries only
        until it answers again, so an outage stalls the writer once, not once per operation.
        """
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                self._call(target, op)
                self._down.discard(target.name)
                return True
            except HookTimeout as exc:
                self._hung.add(target.name)
                self._record_failure(target, op, exc)
                if self._strict:
                    raise
                return False
            except Exception as exc:
                if self._strict:
                    raise BackendError(f"{_describe(target)} failed in {op.hook}: {exc}") from exc
                transient = _connection_error(exc)
                patient = (
                    transient
                    and target.name not in self._down
                    and time.monotonic() - started < self._retry_window
                )
                if attempt >= self._max_retries and not patient:
                    if transient and attempt > self._max_retries:
                        self._down.add(target.name)
                    self._record_failure(target, op, exc)
                    return False
                self._stats.retries += 1
                self._sleep(min(self._backoff * (2 ** min(attempt, 16)), MAX_BACKOFF))
                attempt += 1

    def _record_failure(self, target: Any, op: Op, exc: Exception, quiet: bool = False) -> None:
        never_started = getattr(target, "broken", None) is not None
        self._passing[target.name] = never_started or isinstance(exc, HookTimeout) or _connection_error(exc)
        stats = self._stats
        stats.write_errors += 1
        if getattr(target, "is_backend", True):  # an observer's failure loses no stored data
            stats.points_undelivered += op.points
            run_id = op.kwargs.get("run_id")
            if op.points and isinstance(run_id, str):
                self._undelivered_by_run[run_id] = self._undelivered_by_run.get(run_id, 0) + op.points
        stats.errors_by_target[target.name] = stats.errors_by_target.get(target.name, 0) + 1
        stats.last_error = f"{_describe(target)}: {op.hook} failed: {type(exc).__name__}: {exc}"
        if not quiet:
            log.error("mltrack: %s (%d points)", stats.last_error, op.points)

    def barrier(self) -> None:
        """Nothing to wait for: ``deliver`` stores before it returns."""

    def close(self) -> None:
        """Nothing to release: the targets belong to the caller."""


class ObservedSink:
    """Backends through ``stores`` (a writer process), observers here, in the flusher thread.

    Observers run in the training process in both writer modes, so one registered in code
    sees every write even when a writer process stores the data.
    """

    def __init__(self, stores: Sink, observers: HookSink) -> None:
        self._stores = stores
        self._observers = observers

    def deliver(self, op: Op) -> None:
        self._stores.deliver(op)
        self._observers.deliver(op)

    def barrier(self) -> None:
        self._stores.barrier()

    def close(self) -> None:
        self._stores.close()
        self._observers.close()

    def release_after_fork(self) -> None:
        release = getattr(self._stores, "release_after_fork", None)
        if callable(release):
            release()


# File-system errors that waiting does not fix: a store at a path that cannot hold it.
_PERMANENT_OS_ERRORS = (
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_PERMANENT_ERRNOS = frozenset({errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP})


def _connection_error(exc: BaseException) -> bool:
    """True if ``exc``, or what it was raised from, is a transient ``OSError`` (refused, reset, timeout, I/O).

    A store restarting answers with these for a while, so they are retried for the retry
    window. A path that is a file, missing, read-only or not permitted stays so: retrying
    it only stalls the writer (a fan-out target on such a path held every write for 60 s).
    """
    for current in causes(exc):
        if isinstance(current, OSError):
            permanent = isinstance(current, _PERMANENT_OS_ERRORS) or current.errno in _PERMANENT_ERRNOS
            return not permanent
    return False


def _describe(target: Any) -> str:
    kind = "backend" if getattr(target, "is_backend", True) else "plugin"
    return f"{kind} {target.name!r}"


class Writer:
    """The buffer and its flusher thread; one per tracker."""

    def __init__(
        self,
        sink: Sink,
        *,
        stats: WriterStats | None = None,
        flush_interval: float = 0.1,
        batch_size: int = 50_000,
        max_buffered_points: int = 1_000_000,
        spool: Any = None,
    ) -> None:
        self.stats = stats if stats is not None else WriterStats()
        self._sink = sink
        self._interval = flush_interval
        self._batch_size = max(1, batch_size)
        self._max_points = max(self._batch_size, max_buffered_points)
        self._seal_at = 4 * self._batch_size  # stream items in a batch: a locked log call seals a full one
        # Lock-free calls are held a batch before the limit: the sealer notices only twice per
        # flush interval, and what they add meanwhile should not pass max_buffered_points.
        self._hold_at = max(self._max_points - self._batch_size, self._max_points // 2)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Points not yet sealed, flat: key id, step, value, wall time per point. Log calls append
        # to it with one list.extend (atomic under the GIL), most without taking the lock; sealing
        # (lock held) takes a prefix of it. The list object itself is never replaced.
        self.stream: list[Any] = []
        # True: log calls must take the locked path (_before_append): an error waits to be
        # raised, the buffer is full (backpressure), or the writer was left behind by fork.
        self.hold = False
        self._queue: deque[tuple[int, Op]] = deque()
        self._keys: list[tuple[str, str, Context]] = []  # key id -> (run id, metric name, context)
        self._lanes: dict[tuple[str, str, Context], list[Any]] = {}  # see _lane
        self.run_lanes: dict[str, dict[str, list[Any]]] = {}
        """Run id -> metric name -> lane, for metrics without context (see :meth:`lanes`)."""
        self._first_step: dict[str, int] = {}  # run id -> first automatic step (a resumed run's)
        self._taken = 0  # points moved from the stream into operations
        self._shipped_points = 0  # points handed to the sink
        self._seq = 0  # operations enqueued
        self._shipped = 0  # operations handed to the sink
        self._done = 0  # operations the sink confirmed stored (after a barrier)
        self._waiters = 0
        self._error: BaseException | None = None
        self._disowned = False
        self._closing = False
        self._flush_requested = False
        self._spool = spool
        """A :class:`mltrack.spool.Spool`: sealed operations go there before the sink sees them."""
        self._unspooled: deque[tuple[int, Op]] = deque()  # sealed, not yet spooled (spool only)
        self._thread = threading.Thread(target=self._run, name="mltrack-writer", daemon=True)
        self._thread.start()
        # A thread of its own seals the stream every half interval, even while the sink is busy
        # with a slow store: the spool (when on) takes each batch within the flush interval (the
        # crash window of a group kill), and backpressure holds log calls in time.
        self._sealer = threading.Thread(target=self._seal_loop, name="mltrack-sealer", daemon=True)
        self._sealer.start()

    # --- called by the training loop -------------------------------------------------

    def lanes(self, run_id: str) -> dict[str, list[Any]]:
        """The run's lanes by metric name (metrics without context), for log calls' fast path.

        A log call that finds its lane, a float value, an int step and ``hold`` false may skip
        the lock: it updates the lane (``[highest step, value there, key id]``) and appends
        ``(key id, step, value, wall time)`` to :attr:`stream` with one ``extend``, in that
        order and with no call between reading and writing the lane, so no other thread runs
        in between under the GIL. Lanes are added by the locked path (which validates the
        name first); ``forget_run`` empties the dict, sending later calls to the locked path.
        """
        with self._lock:
            return self.run_lanes.setdefault(run_id, {})

    def log_point(
        self, run_id: str, name: str, value: float, step: int | None, context: Context, ts: float
    ) -> None:
        """Buffer one validated point (``step=None``: the metric's highest step + 1)."""
        # ``with`` on the plain lock (a Condition is dearer). Not acquire() + try/finally, though
        # that is ~60 ns cheaper: a signal handler raising (SIGTERM -> Terminated) right after
        # acquire() returns, before ``try``, would leave the lock held and hang the drain.
        with self._lock:
            if self.hold or len(self.stream) >= self._seal_at:
                self._before_append()
            lane = self._lanes.get((run_id, name, context)) or self._lane(run_id, name, context)
            if step is None:
                step = lane[0] + 1
            if step >= lane[0]:  # a new highest step, or the same step again (last wins)
                lane[0] = step
                lane[1] = value
            self.stream.extend((lane[2], step, value, ts))

    def log_points(
        self, run_id: str, items: Mapping[str, float], step: int | None, context: Context, ts: float
    ) -> None:
        """Buffer several validated points of one step under one lock, in one append."""
        flat: list[Any] = []
        with self._lock:
            if self.hold or len(self.stream) >= self._seal_at:
                self._before_append()
            lanes = self._lanes
            for name, value in items.items():
                lane = lanes.get((run_id, name, context)) or self._lane(run_id, name, context)
                s = lane[0] + 1 if step is None else step
                if s >= lane[0]:
                    lane[0] = s
                    lane[1] = value
                flat += (lane[2], s, value, ts)
            self.stream.extend(flat)

    def _lane(self, run_id: str, name: str, context: Context) -> list[Any]:
        """A new metric's state (lock held): ``[highest step, value there, key id]``.

        The value is None until a point is logged; the highest step starts below the run's
        first automatic step.
        """
        key = (run_id, name, context)
        lane = self._lanes[key] = [self._first_step.get(run_id, 0) - 1, None, len(self._keys)]
        self._keys.append(key)
        if not context and FAST_LANES:
            self.run_lanes.setdefault(run_id, {})[name] = lane
        return lane

    def last_values(self, run_id: str) -> dict[tuple[str, Context], float]:
        """Each metric's value at its highest step so far, for one run."""
        with self._lock:
            return {
                (k[1], k[2]): lane[1]
                for k, lane in self._lanes.items()
                if k[0] == run_id and lane[1] is not None
            }

    def forget_run(self, run_id: str) -> None:
        """Drop the per-metric state of a finished run; its log calls take the locked path again."""
        with self._lock:
            for key in [k for k in self._lanes if k[0] == run_id]:
                del self._lanes[key]
            lanes = self.run_lanes.pop(run_id, None)
            if lanes is not None:
                lanes.clear()
            self._first_step.pop(run_id, None)

    def resume_steps(
        self, run_id: str, last: Mapping[tuple[str, Context], tuple[int, float]], start_step: int | None
    ) -> None:
        """Continue a resumed run's automatic steps: each metric after its ``last`` (step, value).

        ``start_step``: every metric's automatic step starts there instead, new ones included.
        """
        with self._lock:
            if start_step is not None:
                self._first_step[run_id] = start_step
            for (name, context), (step, value) in last.items():
                lane = self._lanes.get((run_id, name, context)) or self._lane(run_id, name, context)
                lane[0] = step if start_step is None else start_step - 1
                lane[1] = value

    def _before_append(self) -> None:
        """Slow path of a log call (lock held): raise a pending error, wait for space, seal a full batch."""
        if self._error is not None:
            self._raise_error()
        if self.pending_points >= self._max_points:
            self._wait_for_space()
        if len(self.stream) >= self._seal_at:
            self._seal()
            self._cond.notify_all()
        self._rehold()

    def _rehold(self) -> None:
        """Recompute whether log calls must take the locked path (lock held)."""
        self.hold = self._error is not None or self._disowned or self.pending_points >= self._hold_at

    def submit(self, hook: str, *, wait: bool = False, **kwargs: Any) -> None:
        """Queue a non-metric operation after every point logged so far; ``wait`` blocks until stored."""
        with self._cond:
            if self._error is not None:
                self._raise_error()
            self._seal()
            seq = self._enqueue(Op(hook, kwargs))
            self._cond.notify_all()
        if wait:
            self._wait_done(seq)

    def flush(self, timeout: float | None = None) -> bool:
        """Hand everything logged so far to the sink and wait; False if ``timeout`` ran out."""
        if self._disowned:
            assert self._error is not None
            raise self._error
        with self._cond:
            self._seal()
            seq = self._seq
            self._flush_requested = True
            self._cond.notify_all()
        return self._wait_done(seq, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain everything, stop the flusher and close the sink."""
        drained = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._sealer.join(timeout)
        self._thread.join(timeout)
        self._sink.close()
        if self._spool is not None:
            try:
                self._spool.close()
            except OSError as exc:
                log.error("mltrack: could not close the spool: %s", exc)
        return drained

    @property
    def points_logged(self) -> int:
        """Points accepted by log calls so far."""
        return self._taken + len(self.stream) // 4

    @property
    def pending_points(self) -> int:
        """Points logged but not yet handed to the sink."""
        return self._taken + len(self.stream) // 4 - self._shipped_points

    # --- internals ----------------------------------------------------------------------

    def _raise_error(self) -> None:
        err = self._error
        assert err is not None
        if not self._disowned:  # a writer left behind by fork stays unusable
            self._error = None
            self._rehold()
        raise err

    def disown_after_fork(self, error: BaseException) -> None:
        """In a forked child: this writer is the parent's. Every later use raises ``error``.

        The child has no flusher thread, and what it logged would never be stored; its exit
        must not close the parent's writer. Locks a parent thread held at the fork are
        replaced, and the sink lets go of what it shares with the parent.
        """
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._disowned = True
        self._error = error
        self.hold = True
        self.stream.clear()  # the parent ships these
        self._queue.clear()
        self._unspooled.clear()
        if self._spool is not None:
            self._spool.release_after_fork()
        self._spool = None
        release = getattr(self._sink, "release_after_fork", None)
        if callable(release):
            release()

    def _wait_for_space(self) -> None:
        self._seal()
        self._flush_requested = True
        self._cond.notify_all()
        while self.pending_points >= self._max_points and self._error is None:
            if not self._thread.is_alive():
                raise BackendError("mltrack writer thread is not running; the buffer cannot drain")
            self._cond.wait(0.5)

    def _wait_done(self, seq: int, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            self._flush_requested = True
            self._cond.notify_all()
            try:
                while self._done < seq:
                    if self._error is not None:
                        self._raise_error()
                    if not self._thread.is_alive():
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
                if self._error is not None:
                    self._raise_error()
            finally:
                self._waiters -= 1
        return True

    def _enqueue(self, op: Op) -> int:
        self._seq += 1
        if self._spool is None:
            self._queue.append((self._seq, op))
        else:
            self._unspooled.append((self._seq, Op(op.hook, op.kwargs, op.points, self._seq)))
        return self._seq

    def _seal_loop(self) -> None:
        """Seal every half interval; with a spool, append what is sealed to it, then queue it for the sink."""
        spool = self._spool
        while True:
            with self._cond:
                if not (self._unspooled or self._closing):
                    self._cond.wait(self._interval / 2)
                self._seal()
                self._cond.notify_all()
                items = list(self._unspooled)
                self._unspooled.clear()
                if not items and self._closing:
                    return
            if items:
                try:
                    if spool is not None:
                        spool.append(items, self._open_finals)
                except Exception as exc:  # the spool only protects; a failure never stops delivery
                    log.error("mltrack: could not spool %d operations: %s", len(items), exc)
                with self._cond:
                    self._queue.extend(items)
                    self._cond.notify_all()

    def _open_finals(self) -> dict[str, dict[str, float]]:
        """Each open run's last values, for a compacted spool (recovery marks runs CRASHED with them)."""
        from mltrack.models import final_metric_key

        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for (run_id, name, ctx), lane in self._lanes.items():
                if lane[1] is not None:
                    out.setdefault(run_id, {})[final_metric_key(name, ctx)] = lane[1]
        return out

    @property
    def spool(self) -> Any:
        """The spool (None when off)."""
        return self._spool

    def _seal(self) -> None:
        """Move the stream into the queue, as operations of at most ``batch_size`` points per run (lock held)."""
        stream = self.stream
        n = len(stream)  # log calls may append meanwhile: only these n items are taken
        if n:
            for start in range(0, n, self._seal_at):
                end = min(start + self._seal_at, n)
                self._pack_ops(
                    stream[start:end:4],
                    stream[start + 1 : end : 4],
                    stream[start + 2 : end : 4],
                    stream[start + 3 : end : 4],
                )
            del stream[:n]
            self._taken += n // 4
        self._rehold()

    def _pack_ops(self, kidx: list[int], steps: list[int], values: list[float], ts: list[float]) -> None:
        """Queue one ``mltrack_log_metrics`` operation per run of these points (lock held)."""
        try:
            batches = _pack(self._keys, kidx, steps, values, ts)
        except Exception as exc:  # validation upstream should make this impossible; never silent
            lost = len(values)
            self._shipped_points += lost
            self.stats.write_errors += 1
            self.stats.points_undelivered += lost
            self.stats.last_error = f"could not pack {lost} points: {type(exc).__name__}: {exc}"
            log.error("mltrack: %s", self.stats.last_error)
            return
        for run_id, batch in batches:
            self._enqueue(Op("mltrack_log_metrics", {"run_id": run_id, "batch": batch}, len(batch)))

    def _run(self) -> None:
        while True:
            with self._cond:
                barrier_due = self._waiters > 0 and self._shipped > self._done
                if not (self._queue or self._closing or self._flush_requested or barrier_due):
                    # Waking twice per interval keeps every point's age at hand-over under the
                    # interval, scheduling delays and shipping time included (the crash window).
                    self._cond.wait(self._interval / 2)
                self._seal()
                self._flush_requested = False
                batch = list(self._queue)
                self._queue.clear()
                barrier = self._waiters > 0
                idle = not batch and not (barrier and self._shipped > self._done)
                if idle and self._closing and not self._unspooled:
                    return
            if idle:
                tick = getattr(self._sink, "tick", None)
                if tick is not None:  # a sink holding what a store refused tries again (spool)
                    tick()
                continue
            for seq, op in batch:
                try:
                    self._sink.deliver(op)
                except BaseException as exc:  # strict mode: surface in the caller
                    with self._cond:
                        self._error = exc
                with self._cond:
                    self._shipped = seq
                    self._shipped_points += op.points
                    self._rehold()
                    self._cond.notify_all()
            if barrier:
                try:
                    self._sink.barrier()
                except BaseException as exc:
                    with self._cond:
                        self._error = exc
                        self._rehold()
            with self._cond:
                if barrier:
                    self._done = self._shipped
                self._cond.notify_all()
