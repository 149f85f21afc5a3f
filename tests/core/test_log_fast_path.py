"""Log calls that skip the writer's lock (a metric seen before, a float, an int step or none)
keep every rule of the checked path: order, automatic steps, final values, the finished-run
error, backpressure, errors surfaced in the caller, several threads at once."""

from __future__ import annotations

import threading
import time

import pytest

import mltrack
from mltrack import BackendError, RunStateError, ValidationError
from mltrack.config import configure
from mltrack.factory import experiment_repository, tracking_session
from mltrack.writer import Op

pytestmark = pytest.mark.usefixtures("use_memory")


def _series(run_id: str, name: str) -> list[tuple[int, float]]:
    s = experiment_repository().get_experiment_metrics_sync(run_id).series(name)
    return list(zip((int(x) for x in s.steps), (float(v) for v in s.values)))


def test_fast_and_checked_calls_on_one_metric_keep_order_steps_and_final_value() -> None:
    with mltrack.start_run("fast-path") as run:
        run.log_metric("m", 1.0)  # first call: checked, opens the lane
        run.log_metric("m", 2.0)  # fast, auto step 1
        run.log_metric("m", 3)  # an int value: checked path, auto step 2
        run.log_metric("m", 4.0, step=10)  # fast, explicit
        run.log_metric("m", 5.0, step=4)  # fast, backwards: stored, does not lower the next step
        run.log_metric("m", True)  # a bool: checked (converted to 1.0), auto step 11
        run.log_metric("m", 7.0)  # fast, auto step 12
        run.log_metric("m", 8.0, step=12)  # same step again: last wins for the final value
        run.log_metric("m", 9.0, context={"subset": "val"})  # another series
    # Read back sorted by step; step 12 was logged twice and keeps its last value.
    assert _series(run.id, "m") == [(0, 1.0), (1, 2.0), (2, 3.0), (4, 5.0), (10, 4.0), (11, 1.0), (12, 8.0)]
    summary = experiment_repository().get_experiment_sync(run.id)
    assert summary.final_metrics["m"] == 8.0


def test_bad_steps_on_a_known_metric_are_still_typed_errors_and_log_nothing() -> None:
    with mltrack.start_run("fast-path") as run:
        run.log_metric("m", 1.0, step=0)
        for bad in (-1, 2**63, "3", 1.5):
            with pytest.raises(ValidationError, match="step"):
                run.log_metric("m", 2.0, step=bad)
        run.log_metric("m", 3.0)
    assert _series(run.id, "m") == [(0, 1.0), (1, 3.0)]


def test_a_metric_logged_before_the_finish_is_refused_after_it() -> None:
    run = mltrack.start_run("fast-path")
    run.log_metric("m", 1.0)
    run.log_metric("m", 2.0)
    run.finish()
    with pytest.raises(RunStateError, match="not open"):
        run.log_metric("m", 3.0)
    with pytest.raises(RunStateError, match="not open"):
        tracking_session().log_metric(run.id, "m", 3.0)
    assert _series(run.id, "m") == [(0, 1.0), (1, 2.0)]


def test_threads_logging_at_once_lose_no_point() -> None:
    n, names = 20_000, ["a", "b", "c", "d"]
    with mltrack.start_run("fast-path") as run:

        def work(name: str) -> None:
            for i in range(n):
                run.log_metric(name, float(i))

        threads = [threading.Thread(target=work, args=(name,)) for name in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for name in names:
        assert _series(run.id, name) == [(i, float(i)) for i in range(n)]


def test_a_stuck_store_holds_fast_log_calls_and_loses_nothing() -> None:
    limit, total = 60_000, 300_000
    configure(max_buffered_points=limit, flush_interval=0.02)
    session = tracking_session()
    gate = threading.Event()
    real = session.writer._sink

    class Gated:
        def deliver(self, op: Op) -> None:
            gate.wait()
            real.deliver(op)

        def barrier(self) -> None:
            real.barrier()

        def close(self) -> None:
            real.close()

    session.writer._sink = Gated()
    run = mltrack.start_run("fast-path")
    run.log_metric("m", 0.0, step=0)
    done = threading.Event()

    def produce() -> None:
        for i in range(1, total):
            run.log_metric("m", float(i), step=i)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(1.0)
        assert not done.is_set(), "a stuck store must hold the log calls"
        held = session.writer.pending_points
        # The sealer sets the hold every half flush interval: a little over the limit at most.
        assert limit <= held < 2 * limit, f"{held} points buffered for a limit of {limit}"
    finally:
        gate.set()
        producer.join(60)
    assert done.is_set()
    run.finish()
    assert _series(run.id, "m") == [(i, float(i)) for i in range(total)]


def test_a_store_error_in_strict_mode_reaches_the_next_fast_call() -> None:
    configure(strict=True)
    session = tracking_session()
    run = mltrack.start_run("fast-path")
    run.log_metric("m", 1.0)
    session.writer.flush()

    class Failing:
        def deliver(self, op: Op) -> None:
            raise BackendError("the store refused")

        def barrier(self) -> None:
            pass

        def close(self) -> None:
            pass

    session.writer._sink = Failing()
    run.log_metric("m", 2.0)
    deadline = time.monotonic() + 10
    with pytest.raises(BackendError, match="the store refused"):
        while time.monotonic() < deadline:
            run.log_metric("m", 3.0)
            time.sleep(0.01)
