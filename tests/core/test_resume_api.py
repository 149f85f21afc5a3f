"""``resume=`` on every entry point (start_run, the async tracker), its argument checks, and the
loud error of a backend without the ``mltrack_resume_run`` hook (the stores' own behaviour is in
the conformance suite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import mltrack
import mltrack.factory
from mltrack import hookimpl
from mltrack.config import TrackingConfig
from mltrack.errors import BackendError, RunStateError, ValidationError
from mltrack.factory import build_session
from mltrack.memory import MemoryBackend
from mltrack.models import ExperimentStatus
from mltrack.plugins import PluginHost


def test_start_run_resumes_and_counts(use_memory: None) -> None:
    with mltrack.start_run("resume-api", {"lr": 0.1}) as run:
        for _ in range(3):
            run.log_metric("loss", 1.0)
    with mltrack.start_run(resume=run.id[:6], config={"lr": 0.2}, tags=["again"]) as again:
        assert again.id == run.id
        again.log_metric("loss", 0.5)
        again.log_metric("new_metric", 7.0)  # a metric new to the run starts at 0, as in any run
    repo = mltrack.factory.experiment_repository()
    got = repo.get_experiment_sync(run.id)
    assert (got.status, got.resumed, got.config) == (ExperimentStatus.COMPLETED, 1, {"lr": 0.2})
    assert {"again", "mltrack:resumed=1"} <= set(got.tags)
    history = repo.get_experiment_metrics_sync(run.id)
    assert list(history.series("loss").steps) == [0, 1, 2, 3]
    assert list(history.series("new_metric").steps) == [0]
    assert got.final_metrics["loss"] == 0.5 and got.final_metrics["new_metric"] == 7.0


def test_start_step_moves_every_automatic_step_new_metrics_too(use_memory: None) -> None:
    with mltrack.start_run("resume-api") as run:
        for _ in range(5):
            run.log_metric("loss", 1.0)
    with mltrack.start_run(resume=run.id, start_step=3) as again:  # from a checkpoint at step 3
        again.log_metric("loss", 2.0)
        again.log_metric("acc", 0.9)
    history = mltrack.factory.experiment_repository().get_experiment_metrics_sync(run.id)
    loss = history.series("loss")
    assert list(zip(loss.steps, loss.values)) == [(0, 1.0), (1, 1.0), (2, 1.0), (3, 2.0), (4, 1.0)]
    assert list(history.series("acc").steps) == [3]


def test_async_tracker_resumes(use_memory: None) -> None:
    async def scenario() -> tuple[Any, list[int]]:
        tracker = await mltrack.get_ml_tracker()
        run = await tracker.create_run("resume-async")
        await tracker.log_metric(run, "reward", 1.0)
        await tracker.finish_run(run, ExperimentStatus.CRASHED)
        again = await tracker.create_run(resume=run.id)
        await tracker.log_metric(again, "reward", 2.0)
        await tracker.finish_run(again)
        repo = await mltrack.get_experiment_repository()
        history = await repo.get_experiment_metrics(run.id)
        return await repo.get_experiment(run.id), list(history.series("reward").steps)

    got, steps = asyncio.run(scenario())
    assert got.status is ExperimentStatus.COMPLETED and got.resumed == 1
    assert steps == [0, 1]


def test_bad_combinations_are_validation_errors(use_memory: None) -> None:
    with pytest.raises(ValidationError, match="start_step is for a resumed run"):
        mltrack.start_run("x", start_step=5)
    session = mltrack.factory.tracking_session()
    with pytest.raises(ValidationError, match="run_id or resume"):
        session.create_run("x", run_id="a" * 24, resume="b" * 24)
    run = mltrack.start_run("x")
    with pytest.raises(RunStateError, match="open in this process"):
        mltrack.start_run(resume=run.id)
    with pytest.raises(ValidationError):
        mltrack.start_run(resume=run.id, start_step=-1)
    run.finish()


class NoResume(MemoryBackend):
    """A persistent backend written before the hook existed."""

    mltrack_resume_run = None  # the inherited hook is not there


class _Plugin:
    @hookimpl
    def mltrack_register_backends(self, register: Any) -> None:
        register("noresume", NoResume)


def test_backend_without_the_hook_fails_loudly_and_writes_nothing(tmp_path: Any) -> None:
    host = PluginHost(load_entry_points=False)
    host.register(_Plugin(), name="noresume-plugin")
    config = TrackingConfig(backends=("noresume",), backend_options={"noresume": {"store": str(tmp_path)}})
    backends = host.activate(config)
    session = build_session(config, lambda: backends, host)
    try:
        run = session.create_run("legacy")
        session.finish_run(run)
        with pytest.raises(
            BackendError, match=r"backend 'noresume' does not implement the hook mltrack_resume_run"
        ):
            session.create_run(resume=run.id)
        assert session.open_runs == []
        summary = backends.get_run(run.id)
        assert summary is not None and summary.status is ExperimentStatus.COMPLETED
        assert not [t for t in summary.tags if t.startswith("mltrack:resumed")]
    finally:
        session.close()
        backends.close()
