"""An Optuna study with two worker processes on the cluster: RDBStorage on its PostgreSQL, runs in its MLflow."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import optuna

import mltrack
import mltrack_optuna
from mltrack import ExperimentStatus
from mltrack_mlflow.cluster import Cluster

from _child import popen_python, run_python

# Trials in enqueue order. Those with x > 5 wait until two trials completed, then report a
# loss far above theirs: the median pruner prunes them. x == 1.5 raises mid-way (FAIL).
XS = [2.0, 3.0, 9.0, 1.5, 8.0, 2.5]
EXPECTED_STATES = Counter({"COMPLETE": 3, "PRUNED": 2, "FAIL": 1})
STATUS_OF = {
    "COMPLETE": ExperimentStatus.COMPLETED,
    "PRUNED": ExperimentStatus.INTERRUPTED,
    "FAIL": ExperimentStatus.FAILED,
}

WORKER = """
import time, optuna, mltrack_optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)

def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    if x > 5:  # a bad trial: report once two trials completed, so the pruner has a median
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if len(done) >= 2:
                break
            time.sleep(0.1)
    value = 0.0
    for step in range(3):
        value = (x - 2) ** 2 + 2 - step
        trial.report(value, step)
        if x == 1.5 and step == 1:
            raise RuntimeError("diverged")
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value

study = optuna.load_study(study_name={name!r}, storage={storage!r},
                          pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
mltrack_optuna.optimize(study, objective, n_trials=3, catch=(RuntimeError,))
print("done")
"""

SEARCH = """
import json, mlflow
runs = mlflow.search_runs(experiment_names=[{name!r}], output_format="list")
print(json.dumps([
    {{"id": r.data.tags.get("mltrack.run_id"), "status": r.info.status, "metrics": r.data.metrics,
      "tags": {{k: v for k, v in r.data.tags.items() if k.startswith("optuna")}}}}
    for r in runs
]))
"""


def test_two_workers_share_a_study_on_postgres_tracked_in_mlflow(cluster: Cluster) -> None:
    """6 trials by 2 worker processes: one parent run, 6 child runs with the statuses and values Optuna stored."""
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=cluster.optuna_storage)
    for x in XS:
        study.enqueue_trial({"x": x})
    env = {**cluster.trainer_env(), "MLTRACK_STRICT": "1", "MLTRACK_SYSTEM_METRICS": "0"}
    workers = [
        popen_python(WORKER.format(name=name, storage=cluster.optuna_storage), env=env) for _ in range(2)
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 0 and out.strip().endswith("done"), err[-3000:]

    study = optuna.load_study(study_name=name, storage=cluster.optuna_storage)
    trials = study.get_trials()
    assert Counter(t.state.name for t in trials) == EXPECTED_STATES
    parent_id = study.user_attrs[mltrack_optuna.PARENT_RUN_ATTR]
    with mltrack.open_repository("mlflow", tracking_uri=cluster.tracking_uri, must_exist=True) as repo:
        runs = repo.list_experiments_sync(tags=[f"optuna:study={name}"])
        assert [r.experiment_id for r in runs if "optuna:parent" in r.tags] == [parent_id]
        children = {r.experiment_id: r for r in runs if "optuna:parent" not in r.tags}
        assert len(children) == 6
        for trial in trials:
            run_id = trial.user_attrs[mltrack_optuna.RUN_ID_ATTR]
            assert trial.system_attrs[mltrack_optuna.RUN_ID_ATTR] == run_id
            run = repo.get_experiment_sync(run_id)
            assert run.status is STATUS_OF[trial.state.name], (trial.number, trial.state, run.status)
            assert f"optuna:parent={parent_id}" in run.tags
            assert (mltrack_optuna.PRUNED_TAG in run.tags) is (trial.state.name == "PRUNED")
            assert run.config["x"] == trial.params["x"]
            curve = repo.get_experiment_metrics_sync(run_id).series("value")
            assert dict(zip(curve.steps, curve.values)) == trial.intermediate_values
            if trial.state.name == "COMPLETE":
                assert run.final_metrics["value"] == trial.value
        parent = repo.get_experiment_sync(parent_id)
        assert parent.status is ExperimentStatus.COMPLETED
        assert parent.final_metrics["best_value"] == study.best_value

    # A fresh process with MLflow alone sees the same runs in the server.
    seen = run_python(SEARCH.format(name=name), env={"MLFLOW_TRACKING_URI": cluster.tracking_uri}, clean=True)
    by_id = {row["id"]: row for row in seen}
    assert set(by_id) == {parent_id, *children}
    mlflow_status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for trial in trials:
        row = by_id[trial.user_attrs[mltrack_optuna.RUN_ID_ATTR]]
        assert row["status"] == mlflow_status[trial.state.name], json.dumps(row)
        if trial.state.name == "COMPLETE":
            assert row["metrics"]["value"] == trial.value
