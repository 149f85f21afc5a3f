"""An observer registered in code sees every write, whichever process stores the data.

Observers run in the training process's flusher in both writer modes; the writer process
(Aim's default) stores only. Before, an in-code observer saw 0 of 100 points with the
writer process and 100 of 100 with ``MLTRACK_WRITER=thread``, silently.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import mltrack
from mltrack import hookimpl
from mltrack.errors import PluginContractError
from mltrack.factory import tracking_session
from mltrack.plugins import get_plugin_host


class CountingObserver:
    """Counts what it is shown, per hook, and the points of every batch."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.points: list[tuple[str, int, float]] = []
        self.calls: dict[str, int] = {}
        self.threads: set[str] = set()

    def _saw(self, hook: str) -> None:
        with self.lock:
            self.calls[hook] = self.calls.get(hook, 0) + 1
            self.threads.add(threading.current_thread().name)

    @hookimpl
    def mltrack_create_run(self, run: Any) -> None:
        self._saw("create_run")

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: Any) -> None:
        self._saw("log_metrics")
        with self.lock:
            for name, _context, steps, values, _times in batch.groups():
                self.points.extend((name, int(s), float(v)) for s, v in zip(steps, values))

    @hookimpl
    def mltrack_log_params(self, run_id: str, params: Any) -> None:
        self._saw("log_params")

    @hookimpl
    def mltrack_finish_run(self, run_id: str, status: Any, end_time: Any, final_metrics: Any) -> None:
        self._saw("finish_run")


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_in_code_observer_sees_every_point_in_both_writer_modes(tmp_path: Path, writer: str) -> None:
    mltrack.configure_backend("aim", storage_path=str(tmp_path / "aim"))
    mltrack.configure(writer=writer)
    observer = CountingObserver()
    get_plugin_host().register(observer, name="counting-observer")

    with mltrack.start_run("observed", config={"lr": 0.1}) as run:
        run.log_params({"batch_size": 32})
        for step in range(100):
            run.log_metric("loss", 1.0 / (step + 1), step=step)

    assert sorted(observer.points) == sorted(("loss", s, 1.0 / (s + 1)) for s in range(100))
    assert observer.calls["create_run"] == 1
    assert observer.calls["finish_run"] == 1
    assert observer.calls["log_params"] == 1
    assert all(name.startswith("mltrack") for name in observer.threads)  # never the training thread
    # ... and the store has them too, written by whichever writer the mode chose.
    repo = mltrack.open_repository("aim", storage_path=str(tmp_path / "aim"))
    assert len(repo.get_experiment_metrics_sync(run.id).series("loss")) == 100


def test_observer_registered_while_a_run_is_open_sees_the_rest(tmp_path: Path) -> None:
    mltrack.configure_backend("aim", storage_path=str(tmp_path / "aim"))
    run = mltrack.start_run("late-observer")
    for step in range(10):
        run.log_metric("loss", float(step), step=step)
    tracking_session().flush()
    observer = CountingObserver()
    get_plugin_host().register(observer, name="late-observer")
    for step in range(10, 30):
        run.log_metric("loss", float(step), step=step)
    run.finish()
    assert [s for _, s, _ in observer.points] == list(range(10, 30))
    assert observer.calls["finish_run"] == 1


def test_observer_answering_reads_cannot_be_honoured_and_is_an_error() -> None:
    class ReadingObserver:
        @hookimpl
        def mltrack_get_run(self, run_id: str) -> None:
            return None

    with pytest.raises(
        PluginContractError, match=r"'mltrack_get_run', which only the primary backend is asked"
    ):
        get_plugin_host().register(ReadingObserver(), name="reading-observer")
