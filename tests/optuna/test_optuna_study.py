"""A real Optuna study (RDB storage on SQLite) tracked into a real Aim repository and MLflow database."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import optuna
import pytest

import mltrack
import mltrack_optuna
from mltrack import ExperimentStatus

from _child import popen_python

# x of each trial, in order: 0 and 1 complete, 2 is far worse than the median and is pruned,
# 3 raises, 4 is better than the median and completes, 5 is pruned.
XS = [2.0, 3.0, 9.0, 1.9, 2.5, 8.0]
FAILING_TRIAL = 3
STEPS = 4
EXPECTED_STATUS = {
    0: ExperimentStatus.COMPLETED,
    1: ExperimentStatus.COMPLETED,
    2: ExperimentStatus.INTERRUPTED,
    3: ExperimentStatus.FAILED,
    4: ExperimentStatus.COMPLETED,
    5: ExperimentStatus.INTERRUPTED,
}


def _study(storage: str, name: str = "sweep", xs: list[float] = XS) -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    for x in xs:
        study.enqueue_trial({"x": x, "optimizer": "adam" if x < 5 else "sgd"})
    return study


def objective(trial: optuna.Trial, on_start: Any = None, fail_at: int | None = FAILING_TRIAL) -> float:
    """A loss curve that ends at (x - 2)^2; trial ``fail_at`` raises mid-way."""
    if on_start is not None:
        on_start(trial)
    x = trial.suggest_float("x", -10, 10)
    trial.suggest_categorical("optimizer", ["adam", "sgd"])
    value = 0.0
    for step in range(STEPS):
        value = (x - 2) ** 2 + (STEPS - 1 - step)
        trial.report(value, step)
        if trial.number == fail_at and step == 1:
            raise RuntimeError("diverged: loss is nan")
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def _check_trial_runs(study: optuna.Study, repo: mltrack.ExperimentRepository, parent_id: str) -> None:
    """Every trial's run: status from its state, params as config, its whole reported curve, tags."""
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "COMPLETE", "PRUNED"]
    for trial in trials:
        run_id = trial.user_attrs[mltrack_optuna.RUN_ID_ATTR]
        assert trial.system_attrs[mltrack_optuna.RUN_ID_ATTR] == run_id
        run = repo.get_experiment_sync(run_id)
        assert run.status is EXPECTED_STATUS[trial.number], trial.number
        assert run.experiment_name == "sweep"
        assert {k: run.config[k] for k in trial.params} == trial.params
        assert {"optuna:study=sweep", f"optuna:trial={trial.number}", f"optuna:parent={parent_id}"} <= set(
            run.tags
        )
        assert (mltrack_optuna.PRUNED_TAG in run.tags) is (trial.state.name == "PRUNED")
        curve = repo.get_experiment_metrics_sync(run_id).series("value")
        assert list(curve.steps) == sorted(trial.intermediate_values)
        assert list(curve.values) == [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
        if trial.state.name == "COMPLETE":
            assert run.final_metrics["value"] == trial.value
        if trial.number == FAILING_TRIAL:
            assert "RuntimeError: diverged" in run.config["error"]


def _check_parent(study: optuna.Study, repo: mltrack.ExperimentRepository) -> str:
    parent_id = study.user_attrs[mltrack_optuna.PARENT_RUN_ATTR]
    parent = repo.get_experiment_sync(parent_id)
    assert parent.status is ExperimentStatus.COMPLETED
    assert parent.final_metrics["best_value"] == study.best_value
    assert parent.final_metrics["best_params/x"] == study.best_params["x"]
    assert parent.final_metrics["n_trials"] == len(study.trials)
    assert parent.config["best_params"] == study.best_params
    best_run = study.best_trial.user_attrs[mltrack_optuna.RUN_ID_ATTR]
    assert {f"optuna:best-trial={study.best_trial.number}", f"optuna:best-run={best_run}"} <= set(parent.tags)
    return parent_id


def test_study_tracked_into_aim(aim_repo: Path, optuna_storage: str, strict: None) -> None:
    """Each trial is a run from its start (RUNNING while it runs), ending with the trial's state."""
    mltrack.configure_backend("aim", storage_path=str(aim_repo))
    seen_while_running: dict[int, tuple[ExperimentStatus, ExperimentStatus]] = {}

    def read_from_outside(trial: optuna.Trial) -> None:
        if trial.number != 1:
            return
        run_id = mltrack_optuna.trial_run(trial).id
        parent_id = trial.study.user_attrs[mltrack_optuna.PARENT_RUN_ATTR]
        with mltrack.open_repository("aim", storage_path=str(aim_repo), must_exist=True) as fresh:
            seen_while_running[trial.number] = (
                fresh.get_experiment_sync(run_id).status,
                fresh.get_experiment_sync(parent_id).status,
            )

    study = _study(optuna_storage)
    mltrack_optuna.optimize(
        study, lambda t: objective(t, read_from_outside), n_trials=len(XS), catch=(RuntimeError,)
    )

    assert seen_while_running == {1: (ExperimentStatus.RUNNING, ExperimentStatus.RUNNING)}
    with mltrack.open_repository("aim", storage_path=str(aim_repo), must_exist=True) as repo:
        parent_id = _check_parent(study, repo)
        _check_trial_runs(study, repo, parent_id)
        # The parent's live curve: the best value so far after each completed trial.
        best = repo.get_experiment_metrics_sync(parent_id).series("best_value")
        assert list(best.steps) == [0, 1, 4]
        assert best.values[-1] == study.best_value


def test_resumed_study_reuses_its_parent_run(aim_repo: Path, optuna_storage: str, strict: None) -> None:
    """Loading the study again from its storage carries on in the same parent run."""
    mltrack.configure_backend("aim", storage_path=str(aim_repo))
    first = _study(optuna_storage, xs=[3.0, 1.5])
    never_fails = functools.partial(objective, fail_at=None)
    mltrack_optuna.optimize(first, never_fails, n_trials=2)
    parent_id = first.user_attrs[mltrack_optuna.PARENT_RUN_ATTR]

    resumed = optuna.load_study(study_name="sweep", storage=optuna_storage)
    resumed.enqueue_trial({"x": 2.25, "optimizer": "adam"})
    resumed.enqueue_trial({"x": 4.0, "optimizer": "sgd"})
    tracker = mltrack_optuna.optimize(resumed, never_fails, n_trials=2)
    assert tracker.parent_run_id == parent_id

    with mltrack.open_repository("aim", storage_path=str(aim_repo), must_exist=True) as repo:
        runs = repo.list_experiments_sync(tags=["optuna:study=sweep"])
        parents = [r for r in runs if "optuna:parent" in r.tags]
        assert [p.experiment_id for p in parents] == [parent_id]
        trial_runs = [r for r in runs if "optuna:parent" not in r.tags]
        assert sorted(r.experiment_id for r in trial_runs) == sorted(
            t.user_attrs[mltrack_optuna.RUN_ID_ATTR] for t in resumed.trials
        )
        assert all(f"optuna:parent={parent_id}" in r.tags for r in trial_runs)
        parent = repo.get_experiment_sync(parent_id)
        assert parent.status is ExperimentStatus.COMPLETED
        assert parent.final_metrics["n_trials"] == 4
        assert parent.final_metrics["best_value"] == resumed.best_value
        best = repo.get_experiment_metrics_sync(parent_id).series("best_value")
        assert list(best.steps) == [0, 1, 2, 3]


def test_study_tracked_into_mlflow(mlflow_dir: Path, optuna_storage: str, strict: None) -> None:
    """The same study into an MLflow SQLite store: statuses, curves, tags and the best value."""
    mltrack.configure_backend("mlflow", storage_path=str(mlflow_dir))
    study = _study(optuna_storage)
    with mltrack_optuna.track_study(study) as tracker:
        study.optimize(tracker.objective(objective), n_trials=len(XS), catch=(RuntimeError,))

    with mltrack.open_repository("mlflow", storage_path=str(mlflow_dir), must_exist=True) as repo:
        parent_id = _check_parent(study, repo)
        _check_trial_runs(study, repo, parent_id)


def test_objective_outside_a_tracked_study_names_the_fix() -> None:
    """trial_run() on an untracked trial says how to track it."""
    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(LookupError, match="track_study"):
        mltrack_optuna.trial_run(trial)


WORKER = """
import time, optuna, mltrack_optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)

def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    for step in range(3):
        trial.report((x - 2) ** 2 + 2 - step, step)
        time.sleep(0.05)
    return (x - 2) ** 2

study = optuna.load_study(study_name="shared", storage={storage!r})
mltrack_optuna.optimize(study, objective, n_trials=3)
print("done")
"""


def test_two_worker_processes_share_one_parent_run(mlflow_dir: Path, optuna_storage: str) -> None:
    """Workers loading one study from its RDB storage track their trials under the same parent run.

    MLflow's store takes writes to one run from several processes; Aim locks a run to one.
    """
    optuna.create_study(study_name="shared", storage=optuna_storage)
    env = {"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(mlflow_dir), "MLTRACK_STRICT": "1"}
    workers = [popen_python(WORKER.format(storage=optuna_storage), env=env) for _ in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0 and out.strip().endswith("done"), err[-3000:]

    study = optuna.load_study(study_name="shared", storage=optuna_storage)
    parent_id = study.user_attrs[mltrack_optuna.PARENT_RUN_ATTR]
    with mltrack.open_repository("mlflow", storage_path=str(mlflow_dir), must_exist=True) as repo:
        runs = repo.list_experiments_sync(tags=["optuna:study=shared"])
        assert [r.experiment_id for r in runs if "optuna:parent" in r.tags] == [parent_id]
        trial_runs = {r.experiment_id: r for r in runs if "optuna:parent" not in r.tags}
        assert len(study.trials) == 6
        for trial in study.trials:
            run = trial_runs[trial.user_attrs[mltrack_optuna.RUN_ID_ATTR]]
            assert run.status is ExperimentStatus.COMPLETED
            assert f"optuna:parent={parent_id}" in run.tags
            assert run.final_metrics["value"] == trial.value
        assert repo.get_experiment_sync(parent_id).status is ExperimentStatus.COMPLETED
