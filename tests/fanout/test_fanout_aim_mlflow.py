"""Two real stores at once: ``ML_TRACKING_BACKEND=aim,mlflow``, and copying runs Aim -> MLflow -> Aim."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import mltrack
from mltrack.factory import experiment_repository, health_sync, open_repository
from mltrack.repository import ExperimentRepository


@pytest.fixture
def storage(
    tmp_path: Path, repo_template: Path, mlflow_db_template: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """ML_STORAGE_PATH holding an empty Aim repository and an empty MLflow database."""
    root = tmp_path / "store"
    shutil.copytree(repo_template, root)
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    monkeypatch.setenv("ML_STORAGE_PATH", str(root))
    return root


def _train(run: mltrack.ActiveRun, seed: int, artifact: Path) -> None:
    for step in range(300):
        run.log_metric("loss", 1.0 / (step + 1 + seed), step=step)
        if step % 50 == 0:
            run.log_metric("reward", float(step * seed), step=step, context={"subset": "eval"})
    run.log_params({"extra": {"warmup": 10}})
    run.set_tags([f"seed-{seed}"])
    run.log_artifact(artifact, "model", name="models/policy.zip", metadata={"seed": seed})


class Ms:
    """A time that equals another within MLflow's precision (it keeps milliseconds)."""

    def __init__(self, when: datetime | None) -> None:
        self.seconds = None if when is None else when.timestamp()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ms) or self.seconds is None or other.seconds is None:
            return isinstance(other, Ms) and self.seconds is other.seconds
        return abs(self.seconds - other.seconds) <= 0.001

    def __repr__(self) -> str:
        return f"Ms({self.seconds})"


def _view(repo: ExperimentRepository, run_id: str) -> dict[str, Any]:
    """A run as a user compares it; times at MLflow's precision (milliseconds)."""
    s = repo.get_experiment_sync(run_id)
    ms = Ms
    points = sorted(
        (
            (p.name, sorted(p.context.items()), p.step, p.value, ms(p.timestamp))
            for p in repo.get_experiment_metrics_sync(run_id)
        ),
        key=lambda p: p[:3],
    )
    artifacts = sorted(
        (a.name, a.artifact_type, a.sha256, a.size, a.metadata, Path(a.file_path).read_bytes())
        for a in repo.list_artifacts_sync(run_id)
    )
    return {
        "run": (s.name, s.experiment_name, s.status, ms(s.start_time), ms(s.end_time)),
        "config": s.config,
        "tags": sorted(s.tags),
        "final": s.final_metrics,
        "description": s.description,
        "points": points,
        "artifacts": artifacts,
    }


def test_fanout_writes_one_run_to_both_stores_with_identical_histories(
    storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_TRACKING_BACKEND", "aim,mlflow")
    artifact = tmp_path / "policy.zip"
    artifact.write_bytes(b"weights" * 500)
    with mltrack.start_run("fanout", {"lr": 0.0003, "net": [64, 64]}, tags=["both"], description="d") as run:
        _train(run, 1, artifact)
    assert experiment_repository().backend == "aim"  # reads come from the first
    assert health_sync().is_healthy

    with open_repository("aim") as aim, open_repository("mlflow") as mlf:
        from_aim, from_mlflow = _view(aim, run.id), _view(mlf, run.id)
    assert len(from_aim["points"]) == 306
    assert from_aim["artifacts"][0][-1] == b"weights" * 500
    assert from_mlflow == from_aim


def test_a_broken_store_does_not_stop_the_other_and_shows_in_health_check(
    storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the MLflow folder should be")
    monkeypatch.setenv("ML_TRACKING_BACKEND", "aim,mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    artifact = tmp_path / "policy.zip"
    artifact.write_bytes(b"weights")

    with mltrack.start_run("half-broken") as run:
        _train(run, 2, artifact)
    health = health_sync()

    with open_repository("aim") as aim:
        assert len(list(aim.get_experiment_metrics_sync(run.id))) == 306
        assert aim.get_experiment_sync(run.id).status is mltrack.ExperimentStatus.COMPLETED
    assert not health.is_healthy
    assert any(i.startswith("mlflow:") for i in health.issues), health.issues
    assert health.details["writer"]["points_undelivered"] == 306, health.details


def test_copy_three_runs_aim_to_mlflow_to_a_fresh_aim_repository(storage: Path, tmp_path: Path) -> None:
    mltrack.configure_backend("aim")
    artifact = tmp_path / "policy.zip"
    artifact.write_bytes(b"weights" * 100)
    ids = []
    for seed in range(3):
        with mltrack.start_run("copy", {"seed": seed}, name=f"run-{seed}") as run:
            _train(run, seed, artifact)
        ids.append(run.id)
    mltrack.factory.reset()
    fresh = tmp_path / "fresh"

    with open_repository("aim") as aim, open_repository("mlflow") as mlf:
        to_mlflow = aim.copy_to_sync(mlf)
        again = aim.copy_to_sync(mlf)
        with open_repository("aim", repo_path=str(fresh)) as aim2:
            back = mlf.copy_to_sync(aim2)
            views = [{r: _view(repo, r) for r in ids} for repo in (aim, mlf, aim2)]

    assert sorted(to_mlflow.copied) == sorted(ids) and to_mlflow.points == 3 * 306
    assert sorted(again.skipped) == sorted(ids) and again.points == 0
    assert sorted(back.copied) == sorted(ids)
    for run_id in ids:
        for field, value in views[0][run_id].items():
            assert views[1][run_id][field] == value, f"MLflow copy of {run_id}: {field}"
            assert views[2][run_id][field] == value, f"Aim copy of the MLflow copy of {run_id}: {field}"
