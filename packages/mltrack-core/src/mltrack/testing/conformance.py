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
writer training code uses) and reads back through ``ExperimentRepository``, as a user does;
the few answers the repository hides (a read hook's None for an unknown run) are read from
the backend's hooks directly (:meth:`Harness.read`).

Tests that need the store to outlive a process (a fresh process reads a run back; a killed
trainer's run reads CRASHED) run only for backends registered ``persistent=True`` and are
skipped, saying so, for the others (``memory``). A subclass tunes them with:

* :meth:`BackendConformance.unusable_config`: the configuration of a location the backend's
  ``preflight`` must refuse (default: ``storage_path`` under a regular file; None skips);
* :attr:`BackendConformance.crash_timeout`: how long a killed trainer's run may read RUNNING.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from mltrack.config import TrackingConfig
from mltrack.errors import BackendError, RunNotFoundError, RunStateError
from mltrack.factory import build_session, open_repository
from mltrack.memory import clear as clear_memory_store
from mltrack.models import (
    ArtifactType,
    ExperimentRun,
    ExperimentStatus,
    ExperimentSummary,
    MetricSeries,
    ModelArtifact,
    TrainingMetrics,
)
from mltrack.plugins import PluginHost, get_plugin_host
from mltrack.repository import ExperimentRepository

__all__ = ["BackendConformance", "Harness"]


def _ids(runs: list[ExperimentSummary]) -> list[str]:
    return [r.experiment_id for r in runs]


class Harness:
    """A session (writer) and a repository over one freshly activated backend configuration."""

    def __init__(self, config: TrackingConfig, host: PluginHost | None = None) -> None:
        self.config = config
        self.host = host or get_plugin_host()
        self.backends = self.host.activate(config)
        self.session = build_session(config, lambda: self.backends, self.host)
        self.repo = ExperimentRepository(self.backends, before_read=self.session.flush)

    @property
    def persistent(self) -> bool:
        """True if the primary backend's data outlives this process (its registration says so)."""
        return self.host.backends()[self.backends.primary].persistent

    def read(self, hook: str, **kwargs: Any) -> Any:
        """The primary backend's own answer to read hook ``hook``, after everything logged is stored.

        For the answers :class:`ExperimentRepository` turns into exceptions or empty lists.
        """
        self.session.flush()
        return self.backends.read(hook, **kwargs)

    def close(self) -> None:
        """Finish open runs, drain the writer and release the backends."""
        self.session.close()
        self.backends.close()


def _config_json(config: TrackingConfig) -> str:
    """``config`` as JSON, for a child process to rebuild with :data:`_CHILD_CONFIG`."""
    return json.dumps(attrs.asdict(config))


# Rebuilds the parent's TrackingConfig in a child process from its JSON (argv[1]).
_CHILD_CONFIG = """
import json, sys
from mltrack.config import TrackingConfig
fields = json.loads(sys.argv[1])
config = TrackingConfig(**{**fields, "backends": tuple(fields["backends"])})
"""


def _run_child(code: str, config: TrackingConfig, *, killed: bool = False, timeout: float = 180) -> Any:
    """Run ``code`` in a fresh interpreter holding ``config``; return the JSON it printed last.

    ``killed``: the child ends by killing itself, so its exit status says nothing.
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD_CONFIG) + textwrap.dedent(code), _config_json(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines or (proc.returncode != 0 and not killed):
        raise AssertionError(
            f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return json.loads(lines[-1])


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _plain_series(series: list[MetricSeries]) -> list[tuple[Any, ...]]:
    """Series as comparable plain values: name, context, steps, values, timestamps (ms)."""
    return sorted(
        (
            s.name,
            sorted(dict(s.context).items()),
            [int(x) for x in s.steps],
            [float(x) for x in s.values],
            None if s.timestamps is None else [round(float(t), 3) for t in s.timestamps],
        )
        for s in series
    )


def _plain_summary(summary: ExperimentSummary) -> dict[str, Any]:
    """Every field of a run summary, tags as a sorted list (a store need not keep their order)."""
    return {**attrs.asdict(summary), "tags": sorted(summary.tags)}


def _plain_artifacts(artifacts: list[ModelArtifact]) -> list[tuple[Any, ...]]:
    """Artifacts as comparable plain values: everything but where the stored copy lies, plus its bytes' hash."""
    return sorted(
        (a.name, a.artifact_type, a.metadata, a.size, a.sha256, _sha(a.file_path)) for a in artifacts
    )


class BackendConformance:
    """Subclass me and provide a ``tracking_config`` fixture (see the module docstring)."""

    many_points: int = 20_000
    """Steps of the two-metric run that must arrive whole across many batches (a store
    reached over the network may use fewer: an ``aim server`` takes ~2 ms a point)."""

    crash_timeout: float = 60.0
    """Seconds a run whose trainer was killed may still read RUNNING (the writer process
    stores what it received before it marks the run CRASHED)."""

    def unusable_config(self, tracking_config: TrackingConfig, blocker: Path) -> TrackingConfig | None:
        """``tracking_config`` moved to a location no store can be created in, or None to skip the test.

        ``blocker`` is a regular file, so nothing can be created under it. The default moves
        ``storage_path`` under it; override for a backend located by its own options.
        """
        if tracking_config.storage_path is None:
            return None
        return attrs.evolve(tracking_config, storage_path=str(blocker / "store"))

    @pytest.fixture
    def harness(self, tracking_config: TrackingConfig) -> Iterator[Harness]:
        h = Harness(tracking_config)
        yield h
        h.close()

    @pytest.fixture
    def persistent_harness(self, harness: Harness) -> Harness:
        """The harness, for tests of a store that outlives the process (skipped for the others)."""
        if not harness.persistent:
            pytest.skip(
                f"backend {harness.backends.primary!r} is registered persistent=False: "
                "its runs live in one process, so no other process can read them or see its writer die"
            )
        return harness

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

    def test_description_is_kept(self, harness: Harness) -> None:
        """The run's description (``create_run(description=...)``) reads back as written."""
        description = "PPO on CartPole: baseline with the default clip range.\nSecond line."
        run = harness.session.create_run("conformance", description=description)
        assert harness.repo.get_experiment_sync(run.id).description == description

    def test_set_tags_adds_to_the_earlier_tags(self, harness: Harness) -> None:
        """``set_tags`` adds: the tags given at creation and by earlier calls stay."""
        run = harness.session.create_run("conformance", tags=["created"])
        harness.session.set_tags(run, ["first-call"])
        harness.session.set_tags(run, ["second-call"])
        got = harness.repo.get_experiment_sync(run.id)
        assert set(got.tags) == {"created", "first-call", "second-call"}

    def test_log_params_twice_merges_and_the_later_value_of_a_key_wins(self, harness: Harness) -> None:
        """``log_params`` merges into the config: other keys stay, a key given again takes the new value."""
        run = harness.session.create_run("conformance", {"lr": 0.1, "agent": "PPO"})
        harness.session.log_params(run, {"lr": 0.01, "gamma": 0.99})
        harness.session.log_params(run, {"batch": 64})
        got = harness.repo.get_experiment_sync(run.id)
        assert got.config == {"lr": 0.01, "agent": "PPO", "gamma": 0.99, "batch": 64}

    def test_normal_finish_reads_completed(self, harness: Harness) -> None:
        """``finish_run`` without a status stores COMPLETED."""
        run = harness.session.create_run("conformance")
        harness.session.finish_run(run)
        assert harness.repo.get_experiment_sync(run.id).status is ExperimentStatus.COMPLETED

    def test_run_finished_crashed_by_the_writer_process_reads_crashed(self, harness: Harness) -> None:
        """A run finished with status CRASHED reads CRASHED (not FAILED, not RUNNING).

        That is how mltrack's writer process reports a trainer that died: it finishes the
        trainer's open runs with CRASHED through ``mltrack_finish_run``.
        """
        run = harness.session.create_run("conformance")
        harness.session.log_metric(run, "loss", 1.0, step=0)
        harness.session.finish_run(run, ExperimentStatus.CRASHED)
        got = harness.repo.get_experiment_sync(run.id)
        assert got.status is ExperimentStatus.CRASHED
        assert got.end_time is not None

    def test_metrics_and_artifacts_of_an_unknown_run_are_not_found(self, harness: Harness) -> None:
        """An unknown run id is "not found" everywhere, never a run with no metrics or files.

        The repository raises ``RunNotFoundError``; the read hooks answer None (the hookspec of
        ``mltrack_get_metrics`` says so; ``mltrack_list_artifacts`` answers None likewise, as
        the memory, aim and mlflow backends do), never an empty list.
        """
        unknown = "e" * 24
        harness.session.create_run("conformance")  # a store with a run in it, just not this one
        with pytest.raises(RunNotFoundError):
            harness.repo.get_experiment_metrics_sync(unknown)
        with pytest.raises(RunNotFoundError):
            harness.repo.list_artifacts_sync(unknown)
        assert harness.read("mltrack_get_metrics", run_id=unknown, names=None) is None
        assert harness.read("mltrack_list_artifacts", run_id=unknown) is None

    def test_deleted_run_leaves_no_metrics_or_artifacts_behind(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """After ``delete``, the run's metrics and artifacts are gone too: the read hooks answer None."""
        run = harness.session.create_run("conformance")
        harness.session.log_metric(run, "loss", 1.0, step=0)
        source = tmp_path / "weights.bin"
        source.write_bytes(b"w" * 100)
        harness.session.log_artifact(run, source, ArtifactType.MODEL)
        harness.session.finish_run(run)
        harness.repo.delete_experiment_sync(run.id)
        assert harness.read("mltrack_get_metrics", run_id=run.id, names=None) is None
        assert harness.read("mltrack_list_artifacts", run_id=run.id) is None
        with pytest.raises(RunNotFoundError):
            harness.repo.get_experiment_metrics_sync(run.id)

    def test_preflight_refuses_an_unusable_location_at_create_run(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """A backend registered with ``preflight=`` makes ``create_run`` raise BackendError for a
        location that cannot take a run, and opens no run."""
        registration = harness.host.backends()[harness.backends.primary]
        if registration.preflight is None:
            pytest.skip(f"backend {registration.name!r} registers no preflight check")
        blocker = tmp_path / "a-file-not-a-folder"
        blocker.write_bytes(b"")
        unusable = self.unusable_config(harness.config, blocker)
        if unusable is None:
            pytest.skip("this class names no unusable location: override unusable_config()")
        # Writes would go to the working store: only the preflight may look at the unusable one.
        session = build_session(
            attrs.evolve(unusable, writer="thread"), lambda: harness.backends, harness.host
        )
        try:
            with pytest.raises(BackendError):
                session.create_run("conformance")
            assert session.open_runs == []
        finally:
            session.close()

    # --- resume ---------------------------------------------------------------------------

    def test_resumed_run_continues_its_steps_config_and_count(self, harness: Harness) -> None:
        """``create_run(resume=id)`` reopens a crashed or finished run: RUNNING again, automatic
        steps go on after the last stored one (no gap, no duplicate) or at ``start_step``,
        config merged, tags added, ``resumed`` counted once per resume."""
        s = harness.session
        run = s.create_run("conformance-resume", {"lr": 0.1, "agent": "PPO"}, name="long", tags=["first"])
        for step in range(4):
            s.log_metric(run, "loss", 10.0 - step)
        s.log_metric(run, "acc", 0.5, context={"subset": "val"})
        s.finish_run(run, ExperimentStatus.CRASHED)

        again = s.create_run(resume=run.id, config={"lr": 0.01, "seed": 7}, tags=["second"])
        assert again.id == run.id
        got = harness.repo.get_experiment_sync(run.id)
        assert got.status is ExperimentStatus.RUNNING
        assert got.end_time is None
        assert got.config == {"lr": 0.01, "agent": "PPO", "seed": 7}
        assert {"first", "second"} <= set(got.tags)
        assert got.resumed == 1
        assert got.name == "long" and got.experiment_name == "conformance-resume"
        assert abs((got.start_time - run.start_time).total_seconds()) < 2
        for value in (6.0, 5.0):
            s.log_metric(again, "loss", value)
        s.log_metric(again, "acc", 0.75, context={"subset": "val"})
        s.finish_run(again, ExperimentStatus.FAILED)

        history = harness.repo.get_experiment_metrics_sync(run.id)
        loss = history.series("loss")
        assert list(zip(loss.steps, loss.values)) == [(i, 10.0 - i) for i in range(6)]
        acc = history.series("acc", {"subset": "val"})
        assert list(zip(acc.steps, acc.values)) == [(0, 0.5), (1, 0.75)]
        done = harness.repo.get_experiment_sync(run.id)
        assert done.status is ExperimentStatus.FAILED and done.end_time is not None
        assert done.final_metrics["loss"] == 5.0
        assert done.resumed == 1

        last = s.create_run(resume=run.id[:12], start_step=100)  # a unique prefix will do
        s.log_metric(last, "loss", 1.0)
        s.log_metric(last, "loss", 0.5)
        s.finish_run(last)
        loss = harness.repo.get_experiment_metrics_sync(run.id).series("loss")
        assert list(loss.steps) == [0, 1, 2, 3, 4, 5, 100, 101]
        done = harness.repo.get_experiment_sync(run.id)
        assert done.resumed == 2 and done.status is ExperimentStatus.COMPLETED
        assert done.config == {"lr": 0.01, "agent": "PPO", "seed": 7}

    def test_resume_refuses_unknown_ambiguous_and_running_runs(self, harness: Harness) -> None:
        """An unknown id, a prefix matching several runs (each named in the error) and a run still
        RUNNING (its writer, another session, is alive) raise; no run is opened."""
        s = harness.session
        other = build_session(
            attrs.evolve(harness.config, writer="thread"), lambda: harness.backends, harness.host
        )
        try:
            with pytest.raises(RunNotFoundError):
                other.create_run(resume="0" * 24)
            prefix = uuid.uuid4().hex[:6]
            twins = [
                s.create_run("conformance-resume", run_id=prefix + uuid.uuid4().hex[:18]) for _ in range(2)
            ]
            s.log_metric(twins[0], "loss", 1.0, step=0)
            s.finish_run(twins[1])
            with pytest.raises(RunNotFoundError) as caught:
                other.create_run(resume=prefix)
            assert "ambiguous" in str(caught.value)
            assert all(t.id in str(caught.value) for t in twins)
            with pytest.raises(RunStateError, match="RUNNING"):
                other.create_run(resume=twins[0].id)
            assert other.open_runs == []
        finally:
            other.close()
        assert harness.repo.get_experiment_sync(twins[0].id).status is ExperimentStatus.RUNNING

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
        n = self.many_points
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

    def test_metric_timestamps_are_kept(self, harness: Harness) -> None:
        """Each point's timestamp reads back as logged, to the millisecond (MLflow keeps milliseconds)."""
        run = harness.session.create_run("conformance")
        start = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
        logged = [start + timedelta(seconds=37.5 * step, milliseconds=step) for step in range(10)]
        for step, at in enumerate(logged):
            harness.session.log_metrics(run, TrainingMetrics(step=step, loss=1.0 / (step + 1), timestamp=at))
        series = harness.repo.get_experiment_metrics_sync(run.id).series("loss")
        assert series.timestamps is not None
        got = [float(t) for t in series.timestamps]
        want = [at.timestamp() for at in logged]
        assert all(abs(g - w) <= 0.0011 for g, w in zip(got, want, strict=True)), (got, want)

    def test_points_logged_out_of_order_across_batches_read_sorted(self, harness: Harness) -> None:
        """Points of later steps stored first (an earlier batch) still read back sorted by step."""
        run = harness.session.create_run("conformance")
        for step in range(10, 20):
            harness.session.log_metric(run, "m", float(step), step=step)
        harness.session.flush()  # a batch of its own: the store holds steps 10..19 already
        for step in range(10):
            harness.session.log_metric(run, "m", float(step), step=step)
        series = harness.repo.get_experiment_metrics_sync(run.id).series("m")
        assert list(series.steps) == list(range(20))
        assert [float(v) for v in series.values] == [float(s) for s in range(20)]

    def test_step_logged_again_in_a_later_batch_keeps_the_later_value(self, harness: Harness) -> None:
        """A step logged twice, in two batches, reads back once, with the value logged last."""
        run = harness.session.create_run("conformance")
        for step in range(3):
            harness.session.log_metric(run, "m", 1.0, step=step)
        harness.session.flush()
        harness.session.log_metric(run, "m", 2.0, step=1)
        series = harness.repo.get_experiment_metrics_sync(run.id).series("m")
        assert list(zip(series.steps, series.values)) == [(0, 1.0), (1, 2.0), (2, 1.0)]

    def test_context_reads_back_with_its_series(self, harness: Harness) -> None:
        """A series' context (several keys, a number among the values) reads back as logged."""
        run = harness.session.create_run("conformance")
        context = {"subset": "val", "fold": 2}
        harness.session.log_metric(run, "acc", 0.5, step=0, context=context)
        harness.session.log_metric(run, "acc", 0.75, step=1, context=context)
        (series,) = harness.repo.get_experiment_metrics_sync(run.id).all_series
        assert series.name == "acc"
        assert dict(series.context) == context
        assert list(series.values) == [0.5, 0.75]

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

    def test_artifact_type_is_kept_for_every_type(self, harness: Harness, tmp_path: Path) -> None:
        """Each artifact reads back with the type it was logged with, whichever of the six."""
        run = harness.session.create_run("conformance")
        for kind in ArtifactType:
            source = tmp_path / f"{kind.value}.bin"
            source.write_bytes(kind.value.encode())
            harness.session.log_artifact(run, source, kind)
        got = {a.name: a.artifact_type for a in harness.repo.list_artifacts_sync(run.id)}
        assert got == {f"{kind.value}.bin": kind for kind in ArtifactType}

    def test_artifact_logged_twice_under_one_name_is_kept_once_the_last_winning(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """Logging a file under a name the run already has replaces it: one artifact, the last
        file's bytes, type, size, sha256 and metadata."""
        run = harness.session.create_run("conformance")
        first, second = tmp_path / "first.zip", tmp_path / "second.zip"
        first.write_bytes(b"first" * 10)
        second.write_bytes(b"second, longer" * 20)
        harness.session.log_artifact(run, first, ArtifactType.CHECKPOINT, name="model.zip", metadata={"v": 1})
        harness.session.log_artifact(run, second, ArtifactType.MODEL, name="model.zip", metadata={"v": 2})
        (stored,) = harness.repo.list_artifacts_sync(run.id)
        assert stored.name == "model.zip"
        assert stored.artifact_type is ArtifactType.MODEL
        assert stored.metadata == {"v": 2}
        assert stored.size == second.stat().st_size
        assert stored.sha256 == _sha(second)
        assert Path(stored.file_path).read_bytes() == second.read_bytes()

    def test_health_reports_healthy(self, harness: Harness) -> None:
        answers = dict(harness.backends.health())
        answer = answers[harness.backends.primary]
        assert answer.is_healthy, answer.issues

    # --- across processes and stores -----------------------------------------------------

    def _write_full_run(self, harness: Harness, tmp_path: Path) -> tuple[ExperimentRun, dict[str, Any]]:
        """A finished run with every field set; returns it and what a reader must see of it."""
        s = harness.session
        config = {"lr": 0.0003, "layers": [64, 64], "opt": {"beta": 0.9}}
        run = s.create_run("conformance-full", config, name="full", tags=["a", "b"], description="all fields")
        start = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
        for step in range(5):
            at = start + timedelta(seconds=step)
            s.log_metrics(run, TrainingMetrics(step=step, loss=1.0 / (step + 1), timestamp=at))
            s.log_metric(run, "acc", step / 10, step=step, context={"subset": "val"})
        s.log_params(run, {"seed": 7})
        s.set_tags(run, ["late"])
        source = tmp_path / "policy.zip"
        source.write_bytes(b"policy weights " * 50)
        s.log_artifact(run, source, ArtifactType.MODEL, metadata={"score": 0.9})
        s.finish_run(run, ExperimentStatus.COMPLETED, final_metrics={"win_rate": 0.5})
        expected = {
            "status": "completed",
            "name": "full",
            "experiment_name": "conformance-full",
            "description": "all fields",
            "config": {**config, "seed": 7},
            "tags": ["a", "b", "late"],
            "win_rate": 0.5,
            "loss_steps": [0, 1, 2, 3, 4],
            "acc_values": [0.0, 0.1, 0.2, 0.3, 0.4],
            "artifact_sha": _sha(source),
        }
        return run, expected

    def test_finished_run_is_read_back_complete_by_another_process(
        self, persistent_harness: Harness, tmp_path: Path
    ) -> None:
        """A run written and finished here reads back complete in a fresh Python process."""
        run, expected = self._write_full_run(persistent_harness, tmp_path)
        got = _run_child(
            f"""
            from mltrack.factory import open_repository
            with open_repository(config) as repo:
                run = repo.get_experiment_sync({run.id!r})
                history = repo.get_experiment_metrics_sync(run.experiment_id)
                (artifact,) = repo.list_artifacts_sync(run.experiment_id)
                import hashlib, pathlib
                print(json.dumps(dict(
                    status=run.status.value, name=run.name, experiment_name=run.experiment_name,
                    description=run.description, config=run.config, tags=sorted(run.tags),
                    win_rate=run.final_metrics.get("win_rate"), ended=run.end_time is not None,
                    loss_steps=[int(s) for s in history.series("loss").steps],
                    acc_values=[float(v) for v in history.series("acc", {{"subset": "val"}}).values],
                    artifact_sha=hashlib.sha256(pathlib.Path(artifact.file_path).read_bytes()).hexdigest(),
                )))
            """,
            persistent_harness.config,
        )
        assert got.pop("ended") is True
        assert got == expected

    def test_run_whose_trainer_was_killed_reads_crashed(self, persistent_harness: Harness) -> None:
        """A run whose trainer died (SIGKILL) without finishing it reads CRASHED, within ``crash_timeout``."""
        got = _run_child(
            """
            import os, signal
            from mltrack.factory import build_session
            from mltrack.plugins import get_plugin_host
            host = get_plugin_host()
            session = build_session(config, lambda: host.activate(config), host)
            run = session.create_run("conformance-crash")
            for step in range(10):
                session.log_metric(run, "loss", float(step), step=step)
            session.flush()
            print(json.dumps(run.id), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """,
            persistent_harness.config,
            killed=True,
        )
        deadline = time.monotonic() + self.crash_timeout
        while True:
            status = persistent_harness.repo.get_experiment_sync(got).status
            if status is not ExperimentStatus.RUNNING or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status is ExperimentStatus.CRASHED

    def test_copy_into_memory_keeps_every_field(self, harness: Harness, tmp_path: Path) -> None:
        """``copy_to_sync`` into a memory store keeps every field of a finished run.

        Id, experiment, name, description, tags, config, status, start and end time, final
        metrics, every point (step, value, timestamp to the millisecond, context) and every
        artifact (type, metadata, size, sha256, bytes).
        """
        run, _ = self._write_full_run(harness, tmp_path)
        source = harness.repo.get_experiment_sync(run.id)
        store = f"conformance-copy-{uuid.uuid4().hex}"
        target_config = TrackingConfig(backends=("memory",), backend_options={"memory": {"store": store}})
        try:
            with open_repository(target_config) as target:
                harness.repo.copy_to_sync(target, [run.id])
                copied = target.get_experiment_sync(run.id)
                copied_series = target.get_experiment_metrics_sync(run.id).all_series
                copied_artifacts = _plain_artifacts(target.list_artifacts_sync(run.id))
        finally:
            clear_memory_store(store)
        assert source.description == "all fields" and set(source.tags) == {"a", "b", "late"}
        assert _plain_summary(copied) == _plain_summary(source)
        assert _plain_series(copied_series) == _plain_series(
            harness.repo.get_experiment_metrics_sync(run.id).all_series
        )
        assert len(copied_artifacts) == 1
        assert copied_artifacts == _plain_artifacts(harness.repo.list_artifacts_sync(run.id))
