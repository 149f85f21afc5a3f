"""The backend conformance suite: what every mltrack backend must do, as pytest tests.

A backend author subclasses :class:`BackendConformance` in a test module and provides a
``tracking_config`` fixture selecting their backend::

    import pytest
    from mltrack.config import TrackingConfig
    from mltrack.testing.conformance import BackendConformance

    class TestMyStore(BackendConformance):
        @pytest.fixture
        def tracking_config(self, tmp_path):
            return TrackingConfig(backends=("mystore",), storage_path=str(tmp_path), strict=True)

then runs ``pytest``. Every test writes through the public API (``TrackingSession``, the same
writer training code uses) and reads back through ``ExperimentRepository``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack.config import TrackingConfig
from mltrack.errors import RunNotFoundError
from mltrack.factory import build_session
from mltrack.models import ArtifactType, ExperimentStatus, ExperimentSummary, TrainingMetrics
from mltrack.plugins import PluginHost, get_plugin_host
from mltrack.repository import ExperimentRepository

__all__ = ["BackendConformance", "Harness"]


def _ids(runs: list[ExperimentSummary]) -> list[str]:
    return [r.experiment_id for r in runs]


class Harness:
    """A session (writer) and a repository over one freshly activated backend configuration."""

    def __init__(self, config: TrackingConfig, host: PluginHost | None = None) -> None:
        self.config = config
        host = host or get_plugin_host()
        self.backends = host.activate(config)
        self.session = build_session(config, lambda: self.backends, host)
        self.repo = ExperimentRepository(self.backends, before_read=self.session.flush)

    def close(self) -> None:
        """Finish open runs, drain the writer and release the backends."""
        self.session.close()
        self.backends.close()


class BackendConformance:
    """Subclass me and provide a ``tracking_config`` fixture (see the module docstring)."""

    @pytest.fixture
    def harness(self, tracking_config: TrackingConfig) -> Iterator[Harness]:
        h = Harness(tracking_config)
        yield h
        h.close()

    # --- runs ---------------------------------------------------------------------------

    def test_created_run_is_listed_as_running_with_its_config(self, harness: Harness) -> None:
        config = {
            "learning_rate": 0.0003,
            "agent": "PPO",
            "layers": [64, 64],
            "opt": {"beta": 0.9},
            "ok": True,
        }
        run = harness.session.create_run("conformance", config, name="first", tags=["a", "b"])
        got = harness.repo.get_experiment_sync(run.id)
        assert got.experiment_id == run.id
        assert got.status is ExperimentStatus.RUNNING
        assert got.config == config
        assert got.experiment_name == "conformance"
        assert got.name == "first"
        assert set(got.tags) == {"a", "b"}
        assert abs((got.start_time - run.start_time).total_seconds()) < 2
        assert run.id in [s.experiment_id for s in harness.repo.list_experiments_sync()]

    def test_finished_run_keeps_status_end_time_and_final_metrics(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        for step in range(5):
            harness.session.log_metric(run, "reward", float(step * 10), step=step)
        harness.session.finish_run(run, ExperimentStatus.COMPLETED, final_metrics={"win_rate": 0.68})
        got = harness.repo.get_experiment_sync(run.id)
        assert got.status is ExperimentStatus.COMPLETED
        assert got.end_time is not None and got.end_time >= got.start_time
        assert got.final_metrics["reward"] == 40.0  # default: the last value
        assert got.final_metrics["win_rate"] == 0.68

    @pytest.mark.parametrize("status", [ExperimentStatus.FAILED, ExperimentStatus.INTERRUPTED])
    def test_every_finish_status_round_trips(self, harness: Harness, status: ExperimentStatus) -> None:
        run = harness.session.create_run("conformance")
        harness.session.finish_run(run, status)
        assert harness.repo.get_experiment_sync(run.id).status is status

    def test_list_filters_by_status_name_tags_and_limit_newest_first(self, harness: Harness) -> None:
        s = harness.session
        a = s.create_run("filter-a", tags=["keep"])
        time.sleep(0.01)
        b = s.create_run("filter-b", tags=["keep", "best"])
        time.sleep(0.01)
        c = s.create_run("filter-a")
        s.finish_run(a)
        s.finish_run(b)
        repo = harness.repo
        assert _ids(repo.list_experiments_sync(name="filter-a")) == [c.id, a.id]
        completed = _ids(repo.list_experiments_sync(status=ExperimentStatus.COMPLETED))
        assert a.id in completed and b.id in completed and c.id not in completed
        assert _ids(repo.list_experiments_sync(tags=["keep", "best"])) == [b.id]
        assert _ids(repo.list_experiments_sync(tags=["keep"])) == [b.id, a.id]
        assert len(repo.list_experiments_sync(limit=2)) == 2
        assert _ids(repo.list_experiments_sync(status="running", name="filter-a")) == [c.id]

    def test_log_params_and_set_tags_add_to_the_run(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance", {"a": 1})
        harness.session.log_params(run, {"b": "two", "c": [1, 2]})
        harness.session.set_tags(run, ["late"])
        got = harness.repo.get_experiment_sync(run.id)
        assert got.config == {"a": 1, "b": "two", "c": [1, 2]}
        assert "late" in got.tags

    def test_unknown_run_raises_run_not_found(self, harness: Harness) -> None:
        with pytest.raises(RunNotFoundError):
            harness.repo.get_experiment_sync("0" * 24)
        with pytest.raises(RunNotFoundError):
            harness.repo.get_experiment_metrics_sync("f" * 24)

    def test_unique_id_prefix_finds_the_run(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        assert harness.repo.get_experiment_sync(run.id[:10]).experiment_id == run.id

    def test_deleted_run_is_gone(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        harness.session.log_metric(run, "loss", 1.0, step=0)
        harness.session.finish_run(run)
        harness.repo.delete_experiment_sync(run.id)
        assert run.id not in [s.experiment_id for s in harness.repo.list_experiments_sync()]
        with pytest.raises(RunNotFoundError):
            harness.repo.get_experiment_sync(run.id)

    # --- metrics --------------------------------------------------------------------------

    def test_metric_history_reads_back_exactly(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        for step in range(0, 300, 3):
            harness.session.log_metric(run, "loss", 1.0 / (step + 1), step=step)
        series = harness.repo.get_experiment_metrics_sync(run.id).series("loss")
        assert list(series.steps) == list(range(0, 300, 3))
        assert [float(v) for v in series.values] == [1.0 / (s + 1) for s in range(0, 300, 3)]
        assert series.timestamps is not None and len(series.timestamps) == len(series.steps)

    def test_training_metrics_store_named_and_extra_metrics(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        harness.session.log_metrics(
            run, TrainingMetrics(step=1000, loss=0.045, reward=1250.5, episode_length=100, win_rate=0.68)
        )
        history = harness.repo.get_experiment_metrics_sync(run.id)
        got = {p.name: (p.step, p.value) for p in history}
        assert got == {
            "loss": (1000, 0.045),
            "reward": (1000, 1250.5),
            "episode_length": (1000, 100.0),
            "win_rate": (1000, 0.68),
        }

    def test_nan_and_infinity_are_kept(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        for step, value in enumerate([math.nan, math.inf, -math.inf, 1.5]):
            harness.session.log_metric(run, "odd", value, step=step)
        values = list(harness.repo.get_experiment_metrics_sync(run.id).series("odd").values)
        assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, 1.5]

    def test_repeated_step_keeps_the_last_value_and_steps_read_sorted(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        for step, value in [(5, 1.0), (1, 2.0), (5, 3.0), (3, 4.0)]:
            harness.session.log_metric(run, "m", value, step=step)
        series = harness.repo.get_experiment_metrics_sync(run.id).series("m")
        assert list(zip(series.steps, series.values)) == [(1, 2.0), (3, 4.0), (5, 3.0)]

    def test_contexts_keep_separate_series(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        harness.session.log_metric(run, "loss", 1.0, step=0, context={"subset": "train"})
        harness.session.log_metric(run, "loss", 2.0, step=0, context={"subset": "val"})
        history = harness.repo.get_experiment_metrics_sync(run.id)
        assert list(history.series("loss", {"subset": "val"}).values) == [2.0]
        assert list(history.series("loss", {"subset": "train"}).values) == [1.0]

    def test_names_filter_and_odd_metric_names(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        names = ["rollout/ep_rew_mean", "a b.c-d", "损失", "x" * 255, "time/fps"]
        for i, name in enumerate(names):
            harness.session.log_metric(run, name, float(i), step=0)
        history = harness.repo.get_experiment_metrics_sync(run.id)
        assert history.names == sorted(names)
        only = harness.repo.get_experiment_metrics_sync(run.id, names=["time/fps"])
        assert only.names == ["time/fps"]

    def test_many_points_across_batches_all_arrive(self, harness: Harness) -> None:
        run = harness.session.create_run("conformance")
        n = 20_000
        for step in range(n):
            harness.session.log_metrics(run, {"a": float(step), "b": -float(step)}, step=step)
        harness.session.finish_run(run)
        history = harness.repo.get_experiment_metrics_sync(run.id)
        assert len(history) == 2 * n
        b = history.series("b")
        assert list(b.steps) == list(range(n)) and float(b.values[-1]) == -(n - 1)

    def test_two_runs_logged_interleaved_stay_apart(self, harness: Harness) -> None:
        s = harness.session
        r1, r2 = s.create_run("conformance"), s.create_run("conformance")
        for step in range(100):
            s.log_metric(r1, "v", 1.0, step=step)
            s.log_metric(r2, "v", 2.0, step=step)
        s.finish_run(r1)
        s.finish_run(r2)
        assert set(harness.repo.get_experiment_metrics_sync(r1.id).series("v").values) == {1.0}
        assert set(harness.repo.get_experiment_metrics_sync(r2.id).series("v").values) == {2.0}

    # --- artifacts and health -------------------------------------------------------------

    def test_artifact_is_stored_as_a_copy_with_type_size_and_hash(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        run = harness.session.create_run("conformance")
        source = tmp_path / "best_model.zip"
        payload = b"model weights " * 1000
        source.write_bytes(payload)
        logged = harness.session.log_artifact(
            run, source, ArtifactType.MODEL, metadata={"validation_score": 0.95}
        )
        source.write_bytes(b"overwritten later")  # the stored copy must not change
        (stored,) = harness.repo.list_artifacts_sync(run.id)
        assert stored.name == "best_model.zip"
        assert stored.artifact_type is ArtifactType.MODEL
        assert stored.metadata == {"validation_score": 0.95}
        assert stored.size == len(payload) == logged.size
        assert stored.sha256 == hashlib.sha256(payload).hexdigest()
        assert Path(stored.file_path).read_bytes() == payload

    def test_health_reports_healthy(self, harness: Harness) -> None:
        answers = dict(harness.backends.health())
        answer = answers[harness.backends.primary]
        assert answer.is_healthy, answer.issues
