"""One daemon thread that samples the machine for every open run of the process.

Runs are added when they start and removed when they finish; the thread starts with the first
run and ends when none is left, so a process with no open run has no sampler thread. Samples
go into each run through its tracking session's ``log_metrics``, the path training code uses,
so they reach every backend of a fan-out; the training thread never reads a counter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from mltrack.errors import RunStateError
from mltrack_system.probe import COUNTERS, PREFIX, Probe

__all__ = ["THREAD_NAME", "RunSink", "Sampler", "SamplerStats"]

THREAD_NAME = "mltrack-system-metrics"
"""The sampler thread's name (what ``threading.enumerate()`` and py-spy show)."""

log = logging.getLogger(__name__)


class RunSink(Protocol):
    """Where a run's samples go: a tracking session (``mltrack.tracker.TrackingSession``)."""

    def log_metrics_while_open(self, run_id: str, metrics: Mapping[str, object]) -> bool: ...


class SamplerStats:
    """Counters for ``health_check()``: samples logged, their cost, the last failure."""

    def __init__(self) -> None:
        self.samples = 0
        self.sample_seconds = 0.0
        """Wall time spent sampling and logging (waits for the GIL included)."""
        self.sample_cpu_seconds = 0.0
        """CPU time the sampler thread used: what sampling takes from the process's cores."""
        self.errors = 0
        self.last_error = ""

    def as_details(self) -> dict[str, Any]:
        """The counters as health details (the mean cost of one sample in milliseconds)."""
        n = self.samples
        return {
            "samples": n,
            "sample_ms": round(1000 * self.sample_seconds / n, 3) if n else None,
            "sample_cpu_ms": round(1000 * self.sample_cpu_seconds / n, 3) if n else None,
            "errors": self.errors,
            "last_error": self.last_error,
        }


class _RunState:
    """One run's schedule: its sink, interval, next due time and counter baseline."""

    __slots__ = ("baseline", "interval", "next_due", "sink")

    def __init__(self, sink: RunSink, interval: float, baseline: dict[str, float]) -> None:
        self.sink = sink
        self.interval = interval
        self.next_due = time.monotonic() + interval  # as Aim and MLflow: the first sample after one interval
        self.baseline = baseline


class Sampler:
    """The process's one sampler: ``add`` a run when it starts, ``remove`` it when it finishes."""

    def __init__(self, disk_path: str = "/") -> None:
        self._cond = threading.Condition()
        self._runs: dict[str, _RunState] = {}
        self._thread: threading.Thread | None = None
        self._probe: Probe | None = None
        self._disk_path = disk_path
        self.stats = SamplerStats()

    @property
    def gpu_note(self) -> str:
        """Why no GPU is sampled (``""`` when GPUs are, or before the first run)."""
        return "" if self._probe is None else self._probe.gpu_note

    @property
    def gpus(self) -> int:
        """GPUs sampled."""
        return 0 if self._probe is None else len(self._probe.gpus)

    @property
    def runs(self) -> list[str]:
        """Ids of the runs being sampled."""
        with self._cond:
            return list(self._runs)

    @property
    def thread(self) -> threading.Thread | None:
        """The sampler thread while some run is sampled, else None."""
        return self._thread

    def add(self, run_id: str, sink: RunSink, interval: float) -> None:
        """Sample ``run_id`` every ``interval`` seconds into ``sink`` from now on."""
        with self._cond:
            if self._probe is None:
                self._probe = Probe(self._disk_path)  # psutil imported here, in the hook's thread
            self._runs[run_id] = _RunState(sink, interval, self._probe.counters())
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def remove(self, run_id: str) -> None:
        """Stop sampling ``run_id``; the thread ends once no run is left."""
        with self._cond:
            if self._runs.pop(run_id, None) is not None:
                self._cond.notify_all()

    def _due(self) -> list[tuple[str, _RunState]] | None:
        """Wait until some run is due and return those runs; None once no run is left."""
        with self._cond:
            while True:
                if not self._runs:
                    self._thread = None  # under the lock: the next add() starts a new thread
                    return None
                now = time.monotonic()
                wait = min(state.next_due for state in self._runs.values()) - now
                if wait <= 0:
                    due = [(run_id, s) for run_id, s in self._runs.items() if s.next_due <= now]
                    for _, state in due:  # a late tick does not bunch up the next ones
                        state.next_due = max(state.next_due + state.interval, now + state.interval / 2)
                    return due
                self._cond.wait(wait)

    def _loop(self) -> None:
        probe = self._probe
        assert probe is not None
        probe.start_clock()
        while (due := self._due()) is not None:
            started, started_cpu = time.perf_counter(), time.thread_time()
            try:
                levels = probe.levels()
                counters = probe.counters()
            except Exception as exc:  # a probe failing must never end the thread silently
                self._failed(f"reading the machine failed: {type(exc).__name__}: {exc}")
                continue
            for run_id, state in due:
                values = {PREFIX + name: value for name, value in levels.items()}
                for name in COUNTERS:
                    if name in counters:
                        values[PREFIX + name] = counters[name] - state.baseline.get(name, counters[name])
                try:  # each metric's next step, so a resumed run continues its series
                    if not state.sink.log_metrics_while_open(run_id, values):
                        self.remove(run_id)  # finished between the tick and the log call
                except RunStateError:
                    self.remove(run_id)
                except Exception as exc:
                    self._failed(f"logging into run {run_id} failed: {type(exc).__name__}: {exc}")
            self.stats.samples += 1
            self.stats.sample_seconds += time.perf_counter() - started
            self.stats.sample_cpu_seconds += time.thread_time() - started_cpu

    def _failed(self, message: str) -> None:
        self.stats.errors += 1
        if message != self.stats.last_error:
            log.warning("mltrack-system: %s", message)
        self.stats.last_error = message

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's thread and runs are not this process's."""
        self._cond = threading.Condition()
        self._runs = {}
        self._thread = None
        self._probe = None
