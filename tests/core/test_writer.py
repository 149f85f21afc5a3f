"""The buffered writer: cheap appends, timely hand-over, backpressure, retries, never silent loss."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from mltrack import BackendError
from mltrack.writer import UNDELIVERED_TAG, HookSink, Op, Writer, WriterStats


class RecordingTarget:
    """A write target that stores what it receives, optionally failing or blocking."""

    def __init__(self, name: str = "store", fail_times: int = 0) -> None:
        self.name = name
        self.fail_times = fail_times
        self.calls: list[tuple[str, dict]] = []
        self.gate = threading.Event()
        self.gate.set()

    def call(self, hook_name: str, **kwargs) -> None:
        self.gate.wait()
        if self.fail_times:
            self.fail_times -= 1
            raise OSError("disk hiccup")
        self.calls.append((hook_name, kwargs))

    def points(self) -> list[tuple[int, float]]:
        out = []
        for hook, kw in self.calls:
            if hook == "mltrack_log_metrics":
                out += list(zip(kw["batch"].steps, kw["batch"].values))
        return out


def make_writer(target: RecordingTarget, **kwargs) -> tuple[Writer, WriterStats]:
    stats = WriterStats()
    sink = HookSink([target], stats, strict=kwargs.pop("strict", False), backoff=0.001)
    return Writer(sink, stats=stats, **kwargs), stats


def test_points_reach_the_store_within_the_flush_interval_without_flush() -> None:
    target = RecordingTarget()
    writer, _ = make_writer(target, flush_interval=0.05)
    writer.log_point("r", "loss", 1.0, 0, (), time.time())
    deadline = time.monotonic() + 2
    while not target.points() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert target.points() == [(0, 1.0)]
    writer.close()


def test_operations_keep_their_order_relative_to_points() -> None:
    target = RecordingTarget()
    writer, _ = make_writer(target, flush_interval=10)
    writer.submit("mltrack_create_run", run_id="r")
    writer.log_point("r", "loss", 1.0, 0, (), 0.0)
    writer.submit("mltrack_finish_run", run_id="r")
    writer.flush()
    assert [hook for hook, _ in target.calls] == [
        "mltrack_create_run",
        "mltrack_log_metrics",
        "mltrack_finish_run",
    ]
    writer.close()


def test_auto_step_continues_from_the_highest_step() -> None:
    target = RecordingTarget()
    writer, _ = make_writer(target)
    writer.log_point("r", "m", 1.0, 5, (), 0.0)
    writer.log_point("r", "m", 2.0, 2, (), 0.0)  # backwards: does not lower the next step
    writer.log_point("r", "m", 3.0, None, (), 0.0)
    writer.log_point("r", "other", 4.0, None, (), 0.0)
    writer.flush()
    assert target.points() == [(5, 1.0), (2, 2.0), (6, 3.0), (0, 4.0)]
    assert writer.last_values("r") == {("m", ()): 3.0, ("other", ()): 4.0}
    writer.close()


def test_a_full_buffer_makes_the_caller_wait_and_loses_nothing() -> None:
    target = RecordingTarget()
    target.gate.clear()  # the store is stuck
    writer, _ = make_writer(target, batch_size=10, max_buffered_points=50)
    done = threading.Event()

    def produce() -> None:
        for step in range(200):
            writer.log_point("r", "m", float(step), step, (), 0.0)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.3)
    assert not done.is_set(), "the producer should be blocked by backpressure"
    assert writer.pending_points <= 60
    target.gate.set()
    producer.join(5)
    writer.close()
    assert [s for s, _ in target.points()] == list(range(200))


def test_a_transient_store_error_is_retried_and_nothing_is_lost() -> None:
    target = RecordingTarget(fail_times=2)
    writer, stats = make_writer(target)
    writer.log_point("r", "m", 1.0, 0, (), 0.0)
    writer.flush()
    assert target.points() == [(0, 1.0)]
    assert stats.retries == 2
    assert stats.points_undelivered == 0
    writer.close()


def test_a_persistent_store_error_is_counted_not_raised() -> None:
    target = RecordingTarget(fail_times=100)
    writer, stats = make_writer(target)
    writer.log_point("r", "m", 1.0, 0, (), 0.0)
    writer.log_point("r", "m", 2.0, 1, (), 0.0)
    writer.flush()  # does not raise into the training loop
    assert stats.points_undelivered == 2
    assert stats.write_errors == 1
    assert "disk hiccup" in (stats.last_error or "")
    writer.close()


def test_a_finished_run_is_tagged_with_the_points_its_store_did_not_take() -> None:
    target = RecordingTarget()
    stats = WriterStats()
    sink = HookSink([target], stats, backoff=0.001, max_retries=1)
    batch = Op("mltrack_log_metrics", {"run_id": "r", "batch": None}, points=7)
    target.fail_times = 2  # the store is down for this batch, retry included
    sink.deliver(batch)
    sink.deliver(Op("mltrack_log_metrics", {"run_id": "other", "batch": None}, points=3))  # stored
    sink.deliver(Op("mltrack_finish_run", {"run_id": "r", "status": "completed"}))
    sink.deliver(Op("mltrack_finish_run", {"run_id": "other", "status": "completed"}))

    hooks = [(hook, kw.get("tags")) for hook, kw in target.calls]
    assert hooks == [
        ("mltrack_log_metrics", None),
        ("mltrack_set_tags", (f"{UNDELIVERED_TAG}=7",)),
        ("mltrack_finish_run", None),
        ("mltrack_finish_run", None),
    ]
    assert stats.points_undelivered == 7


class FlakyServer:
    """A store that refuses connections until ``back_at`` (monotonic time), then stores."""

    def __init__(self, name: str, down_for: float) -> None:
        self.name = name
        self.back_at = time.monotonic() + down_for
        self.calls: list[str] = []

    def call(self, hook_name: str, **kwargs) -> None:
        if time.monotonic() < self.back_at:
            try:
                raise ConnectionRefusedError("connection refused")
            except ConnectionRefusedError as exc:  # as a client library wraps it
                raise BackendError("server unreachable") from exc
        self.calls.append(hook_name)


def test_a_server_down_for_less_than_the_retry_window_loses_nothing() -> None:
    server = FlakyServer("server", down_for=0.5)
    stats = WriterStats()
    sink = HookSink([server], stats, backoff=0.01, max_retries=1, retry_window=5.0)
    sink.deliver(Op("mltrack_log_metrics", {"run_id": "r", "batch": None}, points=10))
    assert server.calls == ["mltrack_log_metrics"]
    assert stats.points_undelivered == 0 and stats.retries > 2


def test_a_server_down_for_longer_stalls_the_writer_once_then_fails_fast_until_it_is_back() -> None:
    server = FlakyServer("server", down_for=3600)
    stats = WriterStats()
    sink = HookSink([server], stats, backoff=0.01, max_retries=1, retry_window=0.3)
    started = time.monotonic()
    sink.deliver(Op("mltrack_log_metrics", {"run_id": "r", "batch": None}, points=10))
    first = time.monotonic() - started
    started = time.monotonic()
    sink.deliver(Op("mltrack_log_metrics", {"run_id": "r", "batch": None}, points=5))
    second = time.monotonic() - started
    assert first >= 0.3 and second < 0.2
    assert stats.points_undelivered == 15

    server.back_at = 0.0  # the server is back: the next write goes through and ends the outage
    sink.deliver(Op("mltrack_log_metrics", {"run_id": "r", "batch": None}, points=1))
    assert server.calls == ["mltrack_log_metrics"]
    server.back_at = time.monotonic() + 0.2  # a new short outage gets the whole window again
    sink.deliver(Op("mltrack_log_metrics", {"run_id": "r", "batch": None}, points=1))
    assert server.calls == ["mltrack_log_metrics"] * 2 and stats.points_undelivered == 15


def test_other_errors_get_the_quick_retries_only() -> None:
    target = RecordingTarget(fail_times=100)
    target.call = lambda hook_name, **kw: (_ for _ in ()).throw(ValueError("bad batch"))  # type: ignore[method-assign]
    stats = WriterStats()
    sink = HookSink([target], stats, backoff=0.001, max_retries=2, retry_window=60.0)
    started = time.monotonic()
    sink.deliver(Op("mltrack_log_metrics", {"run_id": "r", "batch": None}, points=4))
    assert time.monotonic() - started < 1.0
    assert stats.retries == 2 and stats.points_undelivered == 4


def test_strict_mode_raises_the_store_error_in_the_caller() -> None:
    target = RecordingTarget(fail_times=1)
    writer, _ = make_writer(target, strict=True)
    writer.log_point("r", "m", 1.0, 0, (), 0.0)
    with pytest.raises(BackendError, match="disk hiccup"):
        writer.flush()
    writer.close()


def test_one_failing_target_does_not_stop_the_other() -> None:
    good, bad = RecordingTarget("good"), RecordingTarget("bad", fail_times=100)
    stats = WriterStats()
    sink = HookSink([bad, good], stats, backoff=0.001)
    sink.deliver(Op("mltrack_log_params", {"run_id": "r", "params": {}}))
    assert len(good.calls) == 1
    assert stats.errors_by_target == {"bad": 1}


def test_points_of_several_runs_are_split_per_run() -> None:
    target = RecordingTarget()
    writer, _ = make_writer(target, flush_interval=10)
    writer.log_point("a", "m", 1.0, 0, (), 0.0)
    writer.log_point("b", "m", 2.0, 0, (), 0.0)
    writer.log_point("a", "m", 3.0, 1, (), 0.0)
    writer.flush()
    per_run = {kw["run_id"]: list(kw["batch"].values) for _, kw in target.calls}
    assert per_run == {"a": [1.0, 3.0], "b": [2.0]}
    writer.close()


def test_interpreter_exit_drains_and_finishes_open_runs(tmp_path) -> None:
    # The memory store lives in the process, so the child reports what it holds at exit.
    code = f"""
import atexit, mltrack
from mltrack import memory

def report():
    stored = memory._stores[{str(tmp_path)!r}][run.id]
    print(stored.status.value, len(stored.series[("m", ())]))
atexit.register(report)  # registered before mltrack's own exit handler, so it runs after it

mltrack.configure_backend("memory", store={str(tmp_path)!r})
run = mltrack.start_run("exit-test")
for step in range(1000):
    run.log_metric("m", float(step), step=step)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["completed", "1000"]


def test_a_store_path_that_cannot_hold_a_store_is_not_retried_for_the_retry_window() -> None:
    # A file where the store's folder should be stays so: waiting 60 s for it stalled the writer.
    def fail(hook_name: str, **kw: object) -> None:
        try:
            raise FileExistsError(17, "File exists", "/tmp/store")
        except FileExistsError as exc:
            raise BackendError("cannot open the store") from exc

    target = RecordingTarget(fail_times=100)
    target.call = fail  # type: ignore[method-assign]
    stats = WriterStats()
    sink = HookSink([target], stats, backoff=0.001, max_retries=2, retry_window=60.0)
    started = time.monotonic()
    sink.deliver(Op("mltrack_log_metrics", {"run_id": "r", "batch": None}, points=5))
    assert time.monotonic() - started < 1.0
    assert stats.retries == 2 and stats.points_undelivered == 5
