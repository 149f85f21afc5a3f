"""``run.set_state`` and ``run.progress``: observers get the state in order with the run's writes.

Core API, no Redis: an in-code observer records what ``mltrack_set_state`` hands it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import mltrack
from mltrack import hookimpl
from mltrack.errors import ValidationError
from mltrack.factory import tracking_session
from mltrack.plugins import get_plugin_host


class Recorder:
    """Keeps every write it sees, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, Any]] = []

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: Any) -> None:
        with self.lock:
            for name, _ctx, steps, values, _ts in batch.groups():
                self.seen.extend(("metric", (name, s, v)) for s, v in zip(steps, values))

    @hookimpl
    def mltrack_set_state(self, run_id: str, values: Any) -> None:
        with self.lock:
            self.seen.append(("state", dict(values)))

    @hookimpl
    def mltrack_finish_run(self, run_id: str, status: Any, end_time: Any, final_metrics: Any) -> None:
        with self.lock:
            self.seen.append(("finish", status.value))


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    mltrack.configure_backend("memory", store=str(tmp_path))
    observer = Recorder()
    get_plugin_host().register(observer, name="state-recorder")
    return observer


def test_state_reaches_observers_in_order_with_metrics(recorder: Recorder) -> None:
    with mltrack.start_run("state") as run:
        run.log_metric("loss", 1.0, step=0)
        run.set_state(phase="rollout", note={"lr": 0.1})
        run.log_metric("loss", 0.5, step=1)
        run.set_state(phase="train")
    assert recorder.seen == [
        ("metric", ("loss", 0, 1.0)),
        ("state", {"phase": "rollout", "note": {"lr": 0.1}}),
        ("metric", ("loss", 1, 0.5)),
        ("state", {"phase": "train"}),
        ("finish", "completed"),
    ]


def test_progress_derives_an_eta_and_the_last_update_always_arrives(recorder: Recorder) -> None:
    with mltrack.start_run("progress") as run:
        run.progress(0, 100)
        time.sleep(0.3)
        run.progress(50, 100)  # 50 units in ~0.3 s: about 0.3 s to go
        for done in range(51, 80):  # each within PROGRESS_EVERY of the last: coalesced
            run.progress(done, 100)
    states = [v for kind, v in recorder.seen if kind == "state"]
    assert states[0] == {"progress_done": 0, "progress_total": 100, "eta_seconds": None}
    assert states[1]["progress_done"] == 50
    assert 0.2 < states[1]["eta_seconds"] < 5.0  # as long again as it took (a busy machine stretches both)
    assert states[-1]["progress_done"] == 79  # sent when the run finished, not lost
    assert len(states) < 10
    assert recorder.seen[-1] == ("finish", "completed")


def test_progress_at_total_is_sent_at_once_with_eta_zero(recorder: Recorder) -> None:
    with mltrack.start_run("done") as run:
        run.progress(1, 2)
        run.progress(2, 2)
        tracking_session().flush()
        states = [v for kind, v in recorder.seen if kind == "state"]
        assert states[-1] == {"progress_done": 2, "progress_total": 2, "eta_seconds": 0.0}


def test_bad_progress_is_a_validation_error_naming_the_value(recorder: Recorder) -> None:
    with mltrack.start_run("bad") as run:
        with pytest.raises(ValidationError, match="total must be > 0"):
            run.progress(1, 0)
        with pytest.raises(ValidationError, match="done must be a number"):
            run.progress("half", 10)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="finite"):
            run.progress(float("nan"), 10)


def test_async_tracker_sets_state(recorder: Recorder) -> None:
    async def main() -> None:
        tracker = await mltrack.get_ml_tracker()
        run = await tracker.create_run("async-state")
        await tracker.set_state(run, phase="eval")
        await tracker.progress(run, 3, 4)
        await tracker.finish_run(run)

    asyncio.run(main())
    states = [v for kind, v in recorder.seen if kind == "state"]
    assert states[0] == {"phase": "eval"}
    assert states[1]["progress_done"] == 3
